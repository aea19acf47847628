// Synchronised batch norm (swamp/layers.h): the statistics of a data-parallel group's whole batch,
// with the group sum in the autograd graph so that backward reduces their gradients too.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <atomic>
#include <map>
#include <mutex>

#include "swamp/layers.h"

namespace swamp::layers {
namespace {

// The group sums of the live scopes, by id: an autograd node keeps the id (an IValue), not the
// function, and finds it while its scope lives (backward runs inside the training step's scope).
std::mutex registry_mutex;
std::map<int64_t, GroupSum>& registry() {
  static std::map<int64_t, GroupSum> r;
  return r;
}
std::atomic<int64_t> next_id{1};
thread_local const SyncBatchNormScope* current = nullptr;
thread_local int64_t current_id = 0;

GroupSum sum_of(int64_t id) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto it = registry().find(id);
  TORCH_CHECK(it != registry().end(),
              "synchronised batch norm: backward ran after its training step ended");
  return it->second;
}

// y = the group's sum of x (every member's x the same shape); the gradient of x is the group's
// sum of y's gradients (each member's loss depends on every member's x through the sum).
struct GroupSumFn : torch::autograd::Function<GroupSumFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t id) {
    ctx->saved_data["id"] = id;
    std::vector<at::Tensor> t{x.clone()};
    sum_of(id)(t);
    return t[0];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    std::vector<at::Tensor> t{grads[0].contiguous().clone()};
    sum_of(ctx->saved_data["id"].toInt())(t);
    return {t[0], at::Tensor()};
  }
};

}  // namespace

SyncBatchNormScope::SyncBatchNormScope(GroupSum sum) : id_(next_id++), outer_(current) {
  TORCH_CHECK_VALUE(static_cast<bool>(sum), "SyncBatchNormScope: no group sum given");
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry()[id_] = std::move(sum);
  }
  current = this;
  current_id = id_;
}

SyncBatchNormScope::~SyncBatchNormScope() {
  current = outer_;
  current_id = outer_ ? outer_->id_ : 0;
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry().erase(id_);
}

bool sync_batchnorm_active() { return current != nullptr; }

at::Tensor sync_batch_norm(const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, at::Tensor running_mean, at::Tensor running_var,
                           at::Tensor num_batches_tracked, double momentum, double eps) {
  TORCH_CHECK(current != nullptr, "sync_batch_norm: no SyncBatchNormScope on this thread");
  TORCH_CHECK_VALUE(input.dim() >= 2, "sync_batch_norm: expected [N, C, ...], got ", input.sizes());
  const int64_t C = input.size(1);
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < input.dim(); ++d) dims.push_back(d);
  // sums of x and x^2 in float64 (the variance as E[x^2] - mean^2 keeps its digits there), and
  // the element count, reduced over the group in one call
  const at::Tensor x = input.to(at::kDouble);
  const double local = static_cast<double>(input.numel() / std::max<int64_t>(C, 1));
  const at::Tensor stats =
      at::cat({x.sum(dims), (x * x).sum(dims), at::full({1}, local, x.options())});
  const at::Tensor total = GroupSumFn::apply(stats, current_id);
  const at::Tensor count = total.narrow(0, 2 * C, 1);
  const at::Tensor mean = total.narrow(0, 0, C) / count;
  const at::Tensor var = (total.narrow(0, C, C) / count - mean * mean).clamp_min(0.0);
  std::vector<int64_t> shape(static_cast<size_t>(input.dim()), 1);
  shape[1] = C;
  at::Tensor y = (x - mean.view(shape)) * (var + eps).rsqrt().view(shape);
  if (weight.defined()) y = y * weight.to(at::kDouble).view(shape);
  if (bias.defined()) y = y + bias.to(at::kDouble).view(shape);
  {  // the running statistics, as torch's batch norm updates them (unbiased variance)
    torch::NoGradGuard no_grad;
    double factor = momentum;
    if (num_batches_tracked.defined()) {
      num_batches_tracked.add_(1);
      if (momentum < 0) factor = 1.0 / num_batches_tracked.item<double>();
    }
    const double n = count.item<double>();
    if (running_mean.defined())
      running_mean.mul_(1.0 - factor).add_(mean.detach().to(running_mean.scalar_type()), factor);
    if (running_var.defined())
      running_var.mul_(1.0 - factor)
          .add_((var.detach() * (n / std::max(n - 1.0, 1.0))).to(running_var.scalar_type()),
                factor);
  }
  return y.to(input.scalar_type()).contiguous(input.suggest_memory_format());
}

at::Tensor BatchNorm2dImpl::forward(const at::Tensor& input) {
  if (!is_training() || !sync_batchnorm_active() || !options.track_running_stats())
    return torch::nn::BatchNorm2dImpl::forward(input);
  _check_input_dim(input);
  return sync_batch_norm(input, weight, bias, running_mean, running_var, num_batches_tracked,
                         options.momentum().has_value() ? *options.momentum() : -1.0,
                         options.eps());
}

}  // namespace swamp::layers
