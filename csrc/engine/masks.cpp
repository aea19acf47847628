#include "masks.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cmath>

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
    row_length_[n] =
        named[n].dim() >= 1 && named[n].size(0) > 0 ? named[n].numel() / named[n].size(0) : 0;
  }
}

std::vector<std::string> Masks::unfit_for(int64_t m) const {
  std::vector<std::string> out;
  for (const auto& n : eligible_)
    if (!nm_fits(masks_.at(n), m)) out.push_back(n);
  return out;
}

int64_t Masks::remaining_after(int64_t remaining, double ratio, const std::string& strategy,
                               int64_t round) const {
  if (const auto nm = parse_nm(strategy)) {
    int64_t out = 0;
    for (const auto& n : eligible_) {
      const at::Tensor& m = masks_.at(n);
      out += nm_fits(m, nm->m) ? m.numel() / nm->m * nm_keep_after(*nm, round) : m.numel();
    }
    return out;
  }
  if (strategy == "layerwise") return -1;
  return remaining - prune_count(ratio, remaining);  // global, and random (the same counts)
}

bool Masks::pruned_from(Model& model, const std::string& strategy) const {
  if (strategy == "random") return true;
  const auto nm = parse_nm(strategy);
  auto named = model.named_parameters(true);
  double kept_min = HUGE_VAL, pruned_max = 0.0;  // over all layers (global)
  for (const auto& kv : masks_) {
    const at::Tensor a = named[kv.first].detach().abs().to(at::kDouble);
    const at::Tensor& keep = kv.second;
    if (nm) {  // per group: each kept |w| >= each pruned one of its group
      if (!nm_fits(keep, nm->m)) continue;
      const at::Tensor ag = a.reshape({-1, nm->m}), kg = keep.reshape({-1, nm->m});
      const at::Tensor lo = at::where(kg, ag, HUGE_VAL).amin(1);
      const at::Tensor hi = at::where(kg, -1.0, ag).amax(1);
      if ((lo < hi).any().item<bool>()) return false;
      continue;
    }
    double lo = HUGE_VAL, hi = 0.0;
    if (keep.any().item<bool>()) lo = a.masked_select(keep).min().item<double>();
    if (!keep.all().item<bool>()) hi = a.masked_select(keep.logical_not()).max().item<double>();
    if (strategy == "layerwise" && lo < hi) return false;
    kept_min = std::min(kept_min, lo);
    pruned_max = std::max(pruned_max, hi);
  }
  return nm || strategy == "layerwise" || kept_min >= pruned_max;
}

void Masks::check_strategy(const std::string& strategy) const {
  const auto nm = parse_nm(strategy);
  if (!nm) return;
  if (unfit_for(nm->m).size() < eligible_.size()) return;
  std::string layers;
  for (const auto& n : eligible_)
    layers += (layers.empty() ? "" : ", ") + n + " (" + std::to_string(row_length_.at(n)) + ")";
  TORCH_CHECK_VALUE(false, "Config.pruning '", strategy,
                    "': no prunable layer has rows that "
                    "split into groups of ",
                    nm->m, " (entries per output row: ", layers, ")");
}

void Masks::apply(Model& model) const {
  torch::NoGradGuard no_grad;
  auto named = model.named_parameters(true);
  for (const auto& kv : masks_) named[kv.first].mul_(kv.second);
}

void Masks::prune(Model& model, double ratio, const std::string& strategy, uint64_t seed,
                  int64_t round) {
  auto named = model.named_parameters(true);
  std::vector<at::Tensor> w, m;
  for (const auto& n : eligible_) {
    w.push_back(named[n].detach());
    m.push_back(masks_[n]);
  }
  if (const auto nm = parse_nm(strategy))
    nm_prune_(w, m, nm_keep_after(*nm, round), nm->m);
  else if (strategy == "layerwise")
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
