// The pruning strategies a run can use (Config.pruning), each one shrinking the masks in place:
// "global" magnitude (global_magnitude.cpp), "layerwise" magnitude and the "random" control.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "swamp/pruning.h"

namespace swamp {

PruneStats layerwise_magnitude_prune_(const std::vector<at::Tensor>& weights,
                                      const std::vector<at::Tensor>& masks, double ratio) {
  TORCH_CHECK_VALUE(masks.size() == weights.size(),
                    "layerwise_magnitude_prune_: needs one mask per weight tensor");
  PruneStats all;
  for (size_t i = 0; i < weights.size(); ++i) {
    const PruneStats s = global_magnitude_prune_({weights[i]}, {masks[i]}, ratio);
    all.remaining_before += s.remaining_before;
    all.pruned += s.pruned;
    all.threshold = std::max(all.threshold, s.threshold);
  }
  return all;
}

PruneStats random_prune_(const std::vector<at::Tensor>& weights,
                         const std::vector<at::Tensor>& masks, double ratio, uint64_t seed) {
  TORCH_CHECK_VALUE(masks.size() == weights.size(),
                    "random_prune_: needs one mask per weight tensor");
  PruneStats stats;
  // how many each tensor loses: as many as global magnitude pruning would remove from it
  const std::vector<at::Tensor> by_magnitude =
      global_magnitude_prune(weights, masks, ratio, PruneBackend::Auto, &stats);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (size_t i = 0; i < weights.size(); ++i) {
    TORCH_CHECK_VALUE(masks[i].is_contiguous(), "random_prune_: masks[", i,
                      "] must be contiguous to be updated in place");
    at::Tensor flat = masks[i].view({-1});
    const at::Tensor kept = flat.nonzero().view({-1}).cpu();
    const int64_t remove = kept.numel() - by_magnitude[i].sum().item<int64_t>();
    if (remove == 0) continue;
    // `remove` of the kept positions, uniformly at random
    const at::Tensor pick = at::randperm(kept.numel(), gen, at::kLong).narrow(0, 0, remove);
    flat.index_fill_(0, kept.index_select(0, pick).to(flat.device()), false);
  }
  stats.threshold = 0.0;  // not a magnitude threshold
  return stats;
}

}  // namespace swamp
