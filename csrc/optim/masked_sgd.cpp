#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include "swamp/optim.h"

namespace swamp {

MaskedSGD::MaskedSGD(std::vector<at::Tensor> params, std::vector<at::Tensor> masks,
                     SgdOptions options)
    : params_(std::move(params)), opt_(options) {
  TORCH_CHECK_VALUE(masks.empty() || masks.size() == params_.size(),
                    "MaskedSGD: one mask (or an undefined tensor) per parameter");
  masks_.resize(params_.size());
  buffers_.resize(params_.size());
  for (size_t i = 0; i < masks.size(); ++i) {
    if (!masks[i].defined()) continue;
    TORCH_CHECK_VALUE(masks[i].sizes() == params_[i].sizes(), "MaskedSGD: mask ", i,
                      " does not match its parameter's shape");
    masks_[i] = masks[i].to(params_[i].options());
  }
}

void MaskedSGD::set_momentum_buffers(std::vector<at::Tensor> buffers) {
  TORCH_CHECK_VALUE(buffers.size() == params_.size(), "MaskedSGD: expected ", params_.size(),
                    " momentum buffers, got ", buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].defined()) buffers[i] = buffers[i].to(params_[i].options());
  buffers_ = std::move(buffers);
}

void MaskedSGD::zero_grad() {
  for (auto& p : params_) {
    at::Tensor g = p.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

void MaskedSGD::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    if (opt_.weight_decay != 0.0) g = g.add(p, opt_.weight_decay);
    if (masks_[i].defined()) g = g.mul(masks_[i]);
    if (opt_.momentum != 0.0) {
      if (!buffers_[i].defined()) {
        buffers_[i] = g.clone();
      } else {
        buffers_[i].mul_(opt_.momentum).add_(g);
      }
      g = opt_.nesterov ? g.add(buffers_[i], opt_.momentum) : buffers_[i];
    }
    p.add_(g, -lr);
    if (masks_[i].defined()) p.mul_(masks_[i]);
  }
}

double learning_rate(const ScheduleOptions& s, int64_t step) {
  constexpr double kPi = 3.14159265358979323846;
  if (s.warmup_steps > 0 && step < s.warmup_steps)
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const bool swa = s.swa_start_step >= 0;
  if (swa && step >= s.swa_start_step) return s.swa_lr;
  const int64_t end = swa ? s.swa_start_step : s.total_steps;
  const double floor_lr = swa ? s.swa_lr : 0.0;
  const double span = static_cast<double>(std::max<int64_t>(1, end - s.warmup_steps));
  const double t = static_cast<double>(step - s.warmup_steps) / span;  // 0 .. 1
  if (s.kind == "constant") return s.lr;
  if (s.kind == "step") {
    double lr = s.lr;
    if (t >= 0.5) lr *= 0.1;
    if (t >= 0.75) lr *= 0.1;
    return swa ? std::max(lr, s.swa_lr) : lr;
  }
  return floor_lr + (s.lr - floor_lr) * 0.5 * (1.0 + std::cos(kPi * std::min(1.0, t)));
}

}  // namespace swamp
