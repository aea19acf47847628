// Exact global magnitude pruning over a list of tensors.
//
// The selection is a radix select over the bit patterns of |w| (for non-negative IEEE floats the
// bit pattern orders like the value), streamed tensor by tensor: no buffer holding all weights is
// ever built, the extra memory is a few 65536-bin histograms.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "swamp/export.h"

namespace swamp {

enum class PruneBackend {
  Auto,    // native CPU kernel for CPU tensors, chunked ATen ops elsewhere
  Native,  // hand-written CPU kernel (CPU tensors only)
  ATen,    // chunked ATen ops: any device
};

struct PruneStats {
  int64_t remaining_before = 0;  // unpruned entries before the call
  int64_t pruned = 0;            // entries removed by the call (== round(ratio * remaining_before))
  double threshold = 0.0;        // |w| of the largest removed entry (0 when nothing is removed)
};

// Returns new bool masks (same shapes and device as `weights`) that remove exactly
// floor(ratio * remaining + 0.5) of the currently unpruned entries, smallest |w| first, ties broken
// by position (tensor order, then flat index: earlier entries are pruned first). Entries pruned in
// `masks` stay pruned. `masks` may be empty (everything unpruned).
// Throws c10::ValueError / c10::TypeError on bad input (never touches the inputs then).
SWAMP_API std::vector<at::Tensor> global_magnitude_prune(const std::vector<at::Tensor>& weights,
                                                         const std::vector<at::Tensor>& masks,
                                                         double ratio,
                                                         PruneBackend backend = PruneBackend::Auto,
                                                         PruneStats* stats = nullptr);

// Same selection, but writes the result into `masks` (contiguous bool tensors) in place.
SWAMP_API PruneStats global_magnitude_prune_(const std::vector<at::Tensor>& weights,
                                             const std::vector<at::Tensor>& masks, double ratio,
                                             PruneBackend backend = PruneBackend::Auto);

// Layer-wise magnitude pruning: each tensor loses floor(ratio * its remaining + 0.5) of its
// unpruned entries, smallest |w| first (Config.pruning "layerwise").
SWAMP_API PruneStats layerwise_magnitude_prune_(const std::vector<at::Tensor>& weights,
                                                const std::vector<at::Tensor>& masks, double ratio);

// The random-pruning control (Config.pruning "random"): each tensor loses as many entries as
// global magnitude pruning would remove from it (the same per-layer densities), at positions
// drawn uniformly among its unpruned entries from a generator seeded with `seed`.
SWAMP_API PruneStats random_prune_(const std::vector<at::Tensor>& weights,
                                   const std::vector<at::Tensor>& masks, double ratio,
                                   uint64_t seed);

// N:M structured sparsity (Config.pruning "N:M", e.g. "2:4").
struct NMPattern {
  int64_t n = 0, m = 0;  // at most n nonzeros in every group of m
};
// Parses "N:M" (1 <= N < M <= 256); nullopt for a string that is not of that form (e.g.
// "global"); a c10::ValueError for N:M numbers out of range.
SWAMP_API std::optional<NMPattern> parse_nm(const std::string& pruning);
// Whether a weight can carry an N:M pattern: its rows (a conv weight flattened per output
// channel, [out, in * kh * kw]) split into whole groups of m.
SWAMP_API bool nm_fits(const at::Tensor& weight, int64_t m);
// How many of each group of m round `round` trains with: one fewer each round, from m (round 0,
// dense) down to n (round m - n and later), whatever the number of rounds (a run extended later
// continues the same steps).
SWAMP_API int64_t nm_keep_after(const NMPattern& pattern, int64_t round);
// In every group of m consecutive entries along each row of each weight (a conv weight
// flattened per output channel) keeps the `keep` of largest |w| among those still unpruned
// (ties: the lower position), in place; every other entry is pruned. Weights whose rows do not
// split into whole groups of m are left as they are (nm_fits). Groups with fewer than `keep`
// unpruned entries keep those. Returns the counts as global_magnitude_prune_ does.
SWAMP_API PruneStats nm_prune_(const std::vector<at::Tensor>& weights,
                               const std::vector<at::Tensor>& masks, int64_t keep, int64_t m);

// Number of pruned weights to remove for a given ratio and remaining count (the rounding rule).
SWAMP_API int64_t prune_count(double ratio, int64_t remaining);

}  // namespace swamp
