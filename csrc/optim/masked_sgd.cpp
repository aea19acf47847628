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

// One fused (foreach) pass per operation over all parameters: on CUDA a handful of multi-tensor
// kernels per step instead of several kernels per parameter; on the CPU the same element-wise
// operations in the same order as a per-parameter loop (bitwise identical results).
void MaskedSGD::step(double lr) {
  torch::NoGradGuard no_grad;
  std::vector<size_t> idx;  // parameters that have a gradient
  std::vector<at::Tensor> p, g;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor grad = params_[i].grad();
    if (!grad.defined()) continue;
    idx.push_back(i);
    p.push_back(params_[i]);
    g.push_back(grad);
  }
  if (idx.empty()) return;
  // d = (g + wd * p) * mask, out of place: p.grad stays as autograd left it
  std::vector<at::Tensor> d =
      opt_.weight_decay != 0.0 ? at::_foreach_add(g, p, opt_.weight_decay) : g;
  std::vector<size_t> masked;  // positions in idx of the masked parameters
  std::vector<at::Tensor> masked_d, masked_p, mask_list;
  for (size_t k = 0; k < idx.size(); ++k) {
    if (!masks_[idx[k]].defined()) continue;
    masked.push_back(k);
    masked_d.push_back(d[k]);
    masked_p.push_back(p[k]);
    mask_list.push_back(masks_[idx[k]]);
  }
  if (!masked.empty()) {
    std::vector<at::Tensor> r = at::_foreach_mul(masked_d, mask_list);
    for (size_t j = 0; j < masked.size(); ++j) d[masked[j]] = r[j];
  }
  std::vector<at::Tensor> direction = d;
  if (opt_.momentum != 0.0) {
    std::vector<at::Tensor> bufs, bufs_d, bufs_all;
    for (size_t k = 0; k < idx.size(); ++k) {
      at::Tensor& b = buffers_[idx[k]];
      if (!b.defined()) {
        b = d[k].clone();  // first step: the buffer is the gradient (PyTorch's convention)
      } else {
        bufs.push_back(b);
        bufs_d.push_back(d[k]);
      }
      bufs_all.push_back(b);
    }
    if (!bufs.empty()) {
      at::_foreach_mul_(bufs, opt_.momentum);
      at::_foreach_add_(bufs, bufs_d);
    }
    direction = opt_.nesterov ? at::_foreach_add(d, bufs_all, opt_.momentum) : bufs_all;
  }
  at::_foreach_add_(p, direction, -lr);
  if (!masked_p.empty()) at::_foreach_mul_(masked_p, mask_list);
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
