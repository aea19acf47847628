// Synchronised batch norm (swamp/layers.h): the statistics of a data-parallel group's whole batch,
// forward, and the per-channel sums of its backward, summed over the group.
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

namespace {

std::vector<int64_t> reduce_dims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

std::vector<int64_t> channel_shape(const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = x.size(1);
  return shape;
}

// The batch norm of the group's whole batch, computed the way torch's CPU kernel computes it in
// one process (statistics accumulated in float64, then y = x * alpha + beta in the input's
// precision; the backward's two per-channel sums accumulated in float64), so that a group's step
// differs from the one-process step by the summation order only. Both directions sum their
// per-channel statistics over the group (GroupSum of the scope `id`).
struct SyncBatchNormFn : torch::autograd::Function<SyncBatchNormFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias,
                            at::Tensor running_mean, at::Tensor running_var,
                            at::Tensor num_batches_tracked, double momentum, double eps,
                            int64_t id) {
    const int64_t C = input.size(1);
    const auto dims = reduce_dims(input);
    const auto shape = channel_shape(input);
    const at::Tensor x = input.to(at::kFloat);
    const at::Tensor xd = x.to(at::kDouble);
    std::vector<at::Tensor> stats{
        at::cat({xd.sum(dims), (xd * xd).sum(dims),
                 at::full({1}, static_cast<double>(input.numel() / std::max<int64_t>(C, 1)),
                          xd.options())})};
    sum_of(id)(stats);
    const double n = stats[0][2 * C].item<double>();
    const at::Tensor mean = stats[0].narrow(0, 0, C) / n;
    const at::Tensor var = (stats[0].narrow(0, C, C) / n - mean * mean).clamp_min(0.0);
    const at::Tensor invstd = (var + eps).rsqrt();
    const at::Tensor mean_f = mean.to(at::kFloat), invstd_f = invstd.to(at::kFloat);
    const at::Tensor w = weight.defined() ? weight.to(at::kFloat) : at::ones_like(mean_f);
    const at::Tensor alpha = invstd_f * w;
    const at::Tensor beta = bias.defined() ? bias.to(at::kFloat) - mean_f * alpha : -mean_f * alpha;
    const at::Tensor y = x * alpha.view(shape) + beta.view(shape);
    {  // the running statistics, as torch's batch norm updates them (unbiased variance)
      double factor = momentum;
      if (num_batches_tracked.defined()) {
        num_batches_tracked.add_(1);
        if (momentum < 0) factor = 1.0 / num_batches_tracked.item<double>();
      }
      if (running_mean.defined())
        running_mean.mul_(1.0 - factor).add_(mean.to(running_mean.scalar_type()), factor);
      if (running_var.defined())
        running_var.mul_(1.0 - factor)
            .add_((var * (n / std::max(n - 1.0, 1.0))).to(running_var.scalar_type()), factor);
    }
    ctx->save_for_backward({input, weight, mean_f, invstd_f});
    ctx->saved_data["id"] = id;
    ctx->saved_data["n"] = n;
    ctx->saved_data["has_bias"] = bias.defined();
    return y.to(input.scalar_type()).contiguous(input.suggest_memory_format());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& mean_f = saved[2];
    const at::Tensor& invstd_f = saved[3];
    const double n = ctx->saved_data["n"].toDouble();
    const int64_t C = input.size(1);
    const auto dims = reduce_dims(input);
    const auto shape = channel_shape(input);
    const at::Tensor x = input.to(at::kFloat);
    const at::Tensor dy = grads[0].to(at::kFloat);
    const at::Tensor xmu = x - mean_f.view(shape);
    // this process's sums of dy and dy * (x - mean), then the group's
    const at::Tensor local = at::cat(
        {dy.to(at::kDouble).sum(dims), (dy.to(at::kDouble) * xmu.to(at::kDouble)).sum(dims)});
    std::vector<at::Tensor> total{local.clone()};
    sum_of(ctx->saved_data["id"].toInt())(total);
    const at::Tensor sum_dy = total[0].narrow(0, 0, C), dotp = total[0].narrow(0, C, C);
    const at::Tensor w = weight.defined() ? weight.to(at::kFloat) : at::ones_like(mean_f);
    const at::Tensor invstd_d = invstd_f.to(at::kDouble);
    const at::Tensor k = (dotp * invstd_d * invstd_d / n).to(at::kFloat);
    const at::Tensor grad_mean = (sum_dy / n).to(at::kFloat);
    const at::Tensor dx =
        (dy - grad_mean.view(shape) - xmu * k.view(shape)) * (invstd_f * w).view(shape);
    // the parameters' gradients of this process's shard (the group sums them with the rest)
    at::Tensor dw, db;
    if (weight.defined()) dw = (local.narrow(0, C, C) * invstd_d).to(weight.scalar_type());
    if (ctx->saved_data["has_bias"].toBool())
      db = local.narrow(0, 0, C).to(weight.defined() ? weight.scalar_type() : at::kFloat);
    return {dx.to(input.scalar_type()).contiguous(input.suggest_memory_format()),
            dw,
            db,
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor sync_batch_norm(const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, at::Tensor running_mean, at::Tensor running_var,
                           at::Tensor num_batches_tracked, double momentum, double eps) {
  TORCH_CHECK(current != nullptr, "sync_batch_norm: no SyncBatchNormScope on this thread");
  TORCH_CHECK_VALUE(input.dim() >= 2, "sync_batch_norm: expected [N, C, ...], got ", input.sizes());
  return SyncBatchNormFn::apply(input, weight, bias, running_mean, running_var, num_batches_tracked,
                                momentum, eps, current_id);
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
