// The processes of a run, the seam for distributed training: which particles a process trains in
// a round, alone or data-parallel with others, and what they exchange (a data-parallel group's
// gradients, the particles' tensors for averaging and evaluation, agreement on the setup). The
// default is one process holding everything; DistributedProcesses (swamp/distributed.h) spreads
// a run over torch.distributed processes.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
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
// the collectives only). DistributedProcesses::layout follows it.
SWAMP_API std::vector<std::vector<int64_t>> data_parallel_groups(int64_t world, int64_t n);

// A sum over processes in flight (Processes::start_sum_in_group): wait() returns once the tensor
// holds the sum, done_at() says when the sum completed (known after wait()). A default-made one
// is already complete.
class SWAMP_API PendingSum {
 public:
  using Clock = std::chrono::steady_clock;
  PendingSum();
  // `wait`: blocks until the sum is in place; `done`: set by whoever completes the sum (the
  // steady clock's nanoseconds), 0 while not known (then done_at() is when wait() returned).
  PendingSum(std::function<void()> wait, std::shared_ptr<std::atomic<int64_t>> done);
  void wait();
  Clock::time_point done_at() const;

 private:
  std::function<void()> wait_;
  std::shared_ptr<std::atomic<int64_t>> done_;
  Clock::time_point waited_{};
};

// The seam itself; this base class is one process holding every particle, alone.
class SWAMP_API Processes {
 public:
  virtual ~Processes() = default;
  // This process's place in a round of n particles (n = 1 also for the ticket). The default:
  // one process, all particles, alone.
  virtual ProcessLayout layout(int64_t n) const { return ProcessLayout{1, 1, 0, n, 0}; }
  // Sums `tensors` in place over the processes that train this process's particle in a round of
  // n (layout(n).per_particle > 1; every member calls it with the same shapes, every step);
  // nothing to do when it trains alone.
  virtual void sum_in_group(int64_t n, std::vector<at::Tensor>& tensors) {
    (void)n;
    (void)tensors;
  }
  // Starts summing one flat tensor in place over the same processes as sum_in_group, so that
  // the sum travels while this process goes on (the gradient buckets of a data-parallel step,
  // sent during backward). Every member starts the same sums in the same order. Default: summed
  // now (sum_in_group), returned complete.
  virtual PendingSum start_sum_in_group(int64_t n, const at::Tensor& flat);
  // Sums `tensors` in place over every process of the run (work shared by all of them:
  // evaluation and batch-norm statistics of the average). Default: alone, nothing to do.
  virtual void sum_over_all(std::vector<at::Tensor>& tensors) { (void)tensors; }
  // This process's rank among all processes of the run (0 alone).
  virtual int64_t rank() const { return 0; }
  // One tensor per particle that this process contributes (layout(n).contributes(); same shape
  // for every particle) -> the tensors of all n particles, in particle order.
  virtual std::vector<at::Tensor> gather(const std::vector<at::Tensor>& local, int64_t n);
  // Whether this process writes checkpoints and results.
  virtual bool primary() const { return true; }
  // Whether a round's particles are spread over processes (checkpoints at round ends only).
  virtual bool spread() const { return false; }
  // Checked once before a run: every process must hold the same `fields` (name, value) of
  // `what`; a difference is an error naming the process, the field and both values.
  virtual void agree(const std::string& what,
                     const std::vector<std::pair<std::string, std::string>>& fields) {
    (void)what;
    (void)fields;
  }
  virtual std::string describe() const { return "one process"; }
};

}  // namespace swamp
