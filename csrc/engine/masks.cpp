#include "masks.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include "swamp/pruning.h"

namespace swamp::engine {

Masks::Masks(Model& model, std::vector<std::string> prunable, bool keep_first_last_dense)
    : prunable_(std::move(prunable)), eligible_(prunable_) {
  TORCH_CHECK_VALUE(!prunable_.empty(), "the model has no prunable weights");
  if (keep_first_last_dense) {
    TORCH_CHECK_VALUE(prunable_.size() > 2, "Config.keep_first_last_dense: the model has only ",
                      prunable_.size(), " prunable layers");
    eligible_ = std::vector<std::string>(prunable_.begin() + 1, prunable_.end() - 1);
  }
  auto named = model.named_parameters(true);
  for (const auto& n : eligible_) {
    TORCH_CHECK_VALUE(named.contains(n), "prunable parameter '", n, "' is not in the model");
    masks_[n] = at::ones_like(named[n], named[n].options().dtype(at::kBool));
  }
}

void Masks::apply(Model& model) const {
  torch::NoGradGuard no_grad;
  auto named = model.named_parameters(true);
  for (const auto& kv : masks_) named[kv.first].mul_(kv.second);
}

void Masks::prune(Model& model, double ratio, const std::string& strategy, uint64_t seed) {
  auto named = model.named_parameters(true);
  std::vector<at::Tensor> w, m;
  for (const auto& n : eligible_) {
    w.push_back(named[n].detach());
    m.push_back(masks_[n]);
  }
  if (strategy == "layerwise")
    layerwise_magnitude_prune_(w, m, ratio);
  else if (strategy == "random")
    random_prune_(w, m, ratio, seed);
  else
    global_magnitude_prune_(w, m, ratio);
}

void Masks::fill_sparsity(Model& model, RoundResult& rr) const {
  auto named = model.named_parameters(true);
  int64_t all = 0, all_kept = 0;
  for (const auto& n : prunable_) {
    const int64_t numel = named[n].numel();
    auto it = masks_.find(n);
    const int64_t kept = it == masks_.end() ? numel : it->second.sum().item<int64_t>();
    all += numel;
    all_kept += kept;
    if (it != masks_.end()) {
      rr.prunable += numel;
      rr.remaining += kept;
    }
    rr.layer_density.emplace_back(n, static_cast<double>(kept) / static_cast<double>(numel));
  }
  rr.sparsity = 1.0 - static_cast<double>(rr.remaining) / static_cast<double>(rr.prunable);
  rr.sparsity_all = 1.0 - static_cast<double>(all_kept) / static_cast<double>(all);
}

void Masks::save(TensorMap& out, const std::string& prefix) const {
  for (const auto& kv : masks_) out[prefix + kv.first] = kv.second;
}

std::pair<int64_t, int64_t> Masks::restore(Entries& e, const std::string& prefix) {
  int64_t eligible = 0, kept = 0;
  for (auto& kv : masks_) {
    const std::string key = prefix + kv.first;
    const at::Tensor& t = e.get(key);
    if (t.scalar_type() != at::kBool || t.sizes() != kv.second.sizes())
      e.damaged(key, "is " + describe(t) + " where the model's mask is " + describe(kv.second));
    kv.second.copy_(t);
    eligible += t.numel();
    kept += t.sum().item<int64_t>();
  }
  return {eligible, kept};
}

}  // namespace swamp::engine
