// The processes of a run: which particles a process trains in a round, alone or data-parallel
// with others (the communication itself is the ParticleAverager seam, swamp/averaging.h, with its
// torch.distributed implementation in swamp/distributed.h).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "swamp/export.h"

namespace swamp {

// Who trains what in a round, for one process: the particles [first, last) it trains, and
// whether it trains them alone (per_particle == 1) or data-parallel with other processes: then
// it is member `group_rank` of the `per_particle` processes that train its one particle, computes
// that share of every batch, and the group sums its gradients every step.
struct ProcessLayout {
  int64_t world = 1;         // processes of the run
  int64_t per_particle = 1;  // processes training each particle of the round (data parallel > 1)
  int64_t first = 0, last = 0;
  int64_t group_rank = 0;
  // The particles whose results this process gives to gather / average: a group's first member
  // speaks for the group (the others hold the same weights, their own batch-norm statistics).
  std::pair<int64_t, int64_t> contributes() const {
    return {first, group_rank == 0 ? last : first};
  }
  // The samples [begin, end) of a batch of `batch` that this process computes.
  std::pair<int64_t, int64_t> shard(int64_t batch) const {
    return {group_rank * batch / per_particle, (group_rank + 1) * batch / per_particle};
  }
};

// The processes that train each particle of a round of n particles (n = 1: the ticket, or IMP)
// on `world` processes, as ranks: n >= world: every process its own particles alone
// (process r: particles [r * n / world, (r + 1) * n / world)), groups of one; n < world:
// particle p is trained data-parallel by the world / n processes [p * g, (p + 1) * g) with
// g = world / n, and the world - n * g processes left over sit the round out (they take part in
// the collectives only). DistributedAverager::layout follows it.
SWAMP_API std::vector<std::vector<int64_t>> data_parallel_groups(int64_t world, int64_t n);

}  // namespace swamp
