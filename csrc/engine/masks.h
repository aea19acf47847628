// The pruning masks of a run: which weights may be pruned, applying the masks, global magnitude
// pruning of the averaged weights, and exact sparsity figures. Internal to swamp_core.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../checkpoint/entries.h"
#include "swamp/engine.h"
#include "swamp/models.h"

namespace swamp::engine {

class Masks {
 public:
  // `prunable`: the model's prunable parameters (ModelSource::prunable); with
  // keep_first_last_dense the first and last of them stay dense (not eligible).
  Masks(Model& model, std::vector<std::string> prunable, bool keep_first_last_dense);

  // The model's prunable parameters, in order (the eligible ones are the masks' names).
  const std::vector<std::string>& prunable() const { return prunable_; }
  // Eligible parameter name -> bool mask (the single-particle shape).
  std::map<std::string, at::Tensor>& map() { return masks_; }
  const std::map<std::string, at::Tensor>& map() const { return masks_; }

  // Zeroes the pruned weights of a single-particle model.
  void apply(Model& model) const;
  // Removes `ratio` of the remaining eligible weights of `model` as `strategy` says
  // (Config.pruning); `seed` drives the random strategy. An N:M strategy ignores `ratio` and
  // gives the mask `round` trains with (nm_keep_after, swamp/pruning.h).
  void prune(Model& model, double ratio, const std::string& strategy, uint64_t seed, int64_t round);
  // Refuses a strategy the model cannot follow (an N:M pattern no eligible layer fits),
  // naming the layers and their row lengths.
  void check_strategy(const std::string& strategy) const;
  // The eligible weights an N:M strategy leaves dense (rows not whole groups of `m`).
  std::vector<std::string> unfit_for(int64_t m) const;
  // How many eligible weights remain after pruning `remaining` of them for round `round` with
  // `strategy`; -1 where only the masks themselves tell (layerwise: per-layer rounding).
  int64_t remaining_after(int64_t remaining, double ratio, const std::string& strategy,
                          int64_t round) const;
  // Whether the masks are what `strategy` gives when pruning `model` (the round's average):
  // every kept |w| at least every pruned one, over all layers (global), per layer (layerwise)
  // or per group (N:M); true for the random control.
  bool pruned_from(Model& model, const std::string& strategy) const;
  // Exact sparsity over the eligible weights and over all prunable ones, per-layer density.
  void fill_sparsity(Model& model, RoundResult& rr) const;

  // In a checkpoint, as `prefix<name>` entries (../checkpoint/entries.h). Restoring checks each
  // mask's dtype and shape and returns (eligible weights, kept weights).
  void save(TensorMap& out, const std::string& prefix) const;
  std::pair<int64_t, int64_t> restore(Entries& e, const std::string& prefix);

 private:
  std::vector<std::string> prunable_, eligible_;
  std::map<std::string, at::Tensor> masks_;
  std::map<std::string, int64_t> row_length_;  // eligible weight -> entries per output row
};

}  // namespace swamp::engine
