// Sparse mode over a whole model: which linear and conv layers train on the sparse kernels, and
// the tensors an optimizer sees then (see swamp/layers.h).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include "swamp/layers.h"

namespace swamp::layers {

int64_t enable_sparse(torch::nn::Module& model, const MaskMap& masks, const std::string& mode,
                      double max_density, double max_conv_density) {
  TORCH_CHECK_VALUE(mode == "off" || mode == "on" || mode == "auto",
                    "enable_sparse: mode must be off, on or auto; got '", mode, "'");
  int64_t n = 0;
  if (mode == "off") return n;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto layer = std::dynamic_pointer_cast<SparseWeightLayer>(item.value());
    if (!layer || !layer->sparse_capable()) continue;
    auto it = masks.find(item.key() + ".weight");
    if (it == masks.end()) continue;
    const double density = it->second.to(at::kFloat).mean().item<double>();
    const bool conv = std::dynamic_pointer_cast<Conv2dImpl>(item.value()) != nullptr;
    if (mode == "on" ? density < 1.0 : density <= (conv ? max_conv_density : max_density)) {
      layer->set_sparse(it->second.to(item.value()->parameters().at(0).device()));
      ++n;
    }
  }
  return n;
}

void disable_sparse(torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto layer = std::dynamic_pointer_cast<SparseWeightLayer>(m)) layer->clear_sparse();
}

void sync_sparse(torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto layer = std::dynamic_pointer_cast<SparseWeightLayer>(m))
      if (layer->is_sparse()) layer->sync_dense();
}

SparseScope::SparseScope(torch::nn::Module& model, const MaskMap& masks, const std::string& mode,
                         double max_density, double max_conv_density)
    : model_(model) {
  try {
    enable_sparse(model, masks, mode, max_density, max_conv_density);
  } catch (...) {
    disable_sparse(model);
    throw;
  }
}

SparseScope::~SparseScope() {
  // The values were taken from the weights and not changed since: writing them back restores the
  // weights (pruned positions are zero either way).
  disable_sparse(model_);
}

std::vector<at::Tensor> trainable_tensors(torch::nn::Module& model) {
  std::map<std::string, at::Tensor> values;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto layer = std::dynamic_pointer_cast<SparseWeightLayer>(item.value()))
      if (layer->is_sparse()) values[item.key() + ".weight"] = layer->values();
  std::vector<at::Tensor> out;
  for (const auto& item : model.named_parameters(true)) {
    auto it = values.find(item.key());
    out.push_back(it == values.end() ? item.value() : it->second);
  }
  return out;
}

std::vector<at::Tensor> trainable_masks(torch::nn::Module& model, const MaskMap& masks,
                                        int64_t particles) {
  std::vector<at::Tensor> out;
  const std::vector<at::Tensor> train = trainable_tensors(model);
  size_t i = 0;
  for (const auto& item : model.named_parameters(true)) {
    auto it = masks.find(item.key());
    const bool sparse = !train[i++].is_same(item.value());
    if (it == masks.end() || sparse) {
      out.emplace_back();
    } else {
      std::vector<int64_t> reps(static_cast<size_t>(it->second.dim()), 1);
      reps[0] = particles;
      at::Tensor m = particles == 1 ? it->second : it->second.repeat(reps);
      out.push_back(m.to(item.value().device()));
    }
  }
  return out;
}

}  // namespace swamp::layers
