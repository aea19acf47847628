#include "swamp/averaging.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/types.h>

#include <optional>

namespace swamp {

void RunningAverage::update(const std::vector<at::Tensor>& values) {
  torch::NoGradGuard no_grad;
  if (count_ == 0) {
    avg_.clear();
    for (const auto& v : values) avg_.push_back(v.detach().clone());
  } else {
    TORCH_CHECK(values.size() == avg_.size(), "RunningAverage: number of tensors changed");
    // avg += (v - avg) / (n + 1): the uniform mean of all snapshots so far
    const double w = 1.0 / static_cast<double>(count_ + 1);
    std::vector<at::Tensor> v;
    for (const auto& t : values) v.push_back(t.detach());
    at::_foreach_lerp_(avg_, v, w);  // one fused pass over all tensors
  }
  ++count_;
}

void average_in_order(const std::vector<std::vector<at::Tensor>>& particles,
                      std::vector<at::Tensor>& out) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK_VALUE(!particles.empty(), "average: no particles");
  const size_t n = particles[0].size();
  TORCH_CHECK_VALUE(out.size() == n, "average: output has ", out.size(), " tensors, expected ", n);
  for (size_t p = 0; p < particles.size(); ++p)
    TORCH_CHECK_VALUE(particles[p].size() == n, "average: particle ", p, " has ",
                      particles[p].size(), " tensors, expected ", n);
  // Fused passes over all tensors: sum the particles, divide, write out.
  std::vector<at::Tensor> acc;
  for (const auto& t : particles[0]) acc.push_back(t.detach().clone());
  for (size_t p = 1; p < particles.size(); ++p) {
    std::vector<at::Tensor> other;
    for (const auto& t : particles[p]) other.push_back(t.detach());
    at::_foreach_add_(acc, other);
  }
  if (particles.size() > 1) at::_foreach_div_(acc, static_cast<double>(particles.size()));
  at::_foreach_copy_(out, acc, /*non_blocking=*/false);
}

void UniformAverager::average(const std::vector<std::vector<at::Tensor>>& particles,
                              std::vector<at::Tensor>& out) {
  average_in_order(particles, out);
}

namespace {
template <typename F>
void for_each_batchnorm(const torch::nn::Module& model, F&& f) {
  for (const auto& m : model.modules(true)) {
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) f(*bn);
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(m)) f(*bn);
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm3dImpl>(m)) f(*bn);
  }
}
}  // namespace

bool has_batchnorm(const torch::nn::Module& model) {
  bool any = false;
  for_each_batchnorm(model, [&](auto&) { any = true; });
  return any;
}

std::vector<at::Tensor> batchnorm_statistics(const torch::nn::Module& model) {
  std::vector<at::Tensor> out;
  for_each_batchnorm(model, [&](auto& bn) {
    for (const at::Tensor& t : {bn.running_mean, bn.running_var, bn.num_batches_tracked})
      if (t.defined()) out.push_back(t);
  });
  return out;
}

bool recompute_batchnorm(torch::nn::Module& model, const std::function<void()>& forward_batches) {
  std::vector<std::optional<double>> saved;
  for_each_batchnorm(model, [&](auto& bn) {
    saved.push_back(bn.options.momentum());
    bn.reset_running_stats();
    bn.options.momentum(std::nullopt);  // cumulative average, not an EMA
  });
  if (saved.empty()) return false;
  const bool was_training = model.is_training();
  model.train(true);
  {
    torch::NoGradGuard no_grad;
    forward_batches();
  }
  model.train(was_training);
  size_t i = 0;
  for_each_batchnorm(model, [&](auto& bn) { bn.options.momentum(saved[i++]); });
  return true;
}

}  // namespace swamp
