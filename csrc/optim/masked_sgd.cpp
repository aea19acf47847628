#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cmath>

#include "../common/simd.h"
#include "swamp/optim.h"

namespace swamp {

namespace {

// One pass over a contiguous parameter: the same element-wise operations, in the same order, as
// the foreach path below (d = (g + wd p) m; buf = mu buf + d; p = (p - lr dir) m), reading each
// array once instead of once per operation. A first step starts from a zero buffer (mu 0 + d = d).
template <typename T, bool kMask, bool kMomentum, bool kNesterov>
inline __attribute__((always_inline)) void sgd_loop(T* p, const T* g, const T* m, T* buf, int64_t n,
                                                    T lr, T wd, T mu) {
  for (int64_t j = 0; j < n; ++j) {
    T d = g[j] + wd * p[j];
    if constexpr (kMask) d = d * m[j];
    T dir = d;
    if constexpr (kMomentum) {
      const T b = mu * buf[j] + d;
      buf[j] = b;
      dir = kNesterov ? d + mu * b : b;
    }
    T q = p[j] + (-lr) * dir;
    if constexpr (kMask) q = q * m[j];
    p[j] = q;
  }
}

template <typename T>
inline __attribute__((always_inline)) void sgd_dispatch(T* p, const T* g, const T* m, T* buf,
                                                        int64_t n, T lr, T wd, T mu,
                                                        bool nesterov) {
  const bool mask = m != nullptr, momentum = buf != nullptr;
  if (mask && momentum && nesterov)
    return sgd_loop<T, true, true, true>(p, g, m, buf, n, lr, wd, mu);
  if (mask && momentum) return sgd_loop<T, true, true, false>(p, g, m, buf, n, lr, wd, mu);
  if (mask) return sgd_loop<T, true, false, false>(p, g, m, buf, n, lr, wd, mu);
  if (momentum && nesterov) return sgd_loop<T, false, true, true>(p, g, m, buf, n, lr, wd, mu);
  if (momentum) return sgd_loop<T, false, true, false>(p, g, m, buf, n, lr, wd, mu);
  sgd_loop<T, false, false, false>(p, g, m, buf, n, lr, wd, mu);
}

SWAMP_TARGET_CLONES void sgd_kernel(float* p, const float* g, const float* m, float* buf, int64_t n,
                                    float lr, float wd, float mu, bool nesterov) {
  sgd_dispatch<float>(p, g, m, buf, n, lr, wd, mu, nesterov);
}

SWAMP_TARGET_CLONES void sgd_kernel(double* p, const double* g, const double* m, double* buf,
                                    int64_t n, double lr, double wd, double mu, bool nesterov) {
  sgd_dispatch<double>(p, g, m, buf, n, lr, wd, mu, nesterov);
}

bool fusable(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& b) {
  auto same = [&](const at::Tensor& t) {
    return !t.defined() ||
           (t.layout() == at::kStrided && t.device() == p.device() &&
            t.scalar_type() == p.scalar_type() && t.sizes() == p.sizes() && t.is_contiguous());
  };
  return p.device().is_cpu() && p.layout() == at::kStrided &&
         (p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble) && p.is_contiguous() &&
         same(g) && same(m) && same(b);
}

}  // namespace

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

// Gradients are released, not zeroed (PyTorch's set_to_none): the next backward then hands its
// gradient over instead of adding it to a zeroed tensor, two passes fewer per parameter.
void MaskedSGD::zero_grad(size_t begin, size_t end) {
  TORCH_CHECK_VALUE(begin <= end && end <= params_.size(), "MaskedSGD::zero_grad: range [", begin,
                    ", ", end, ") outside the ", params_.size(), " parameters");
  for (size_t i = begin; i < end; ++i) params_[i].mutable_grad().reset();
}

// CPU float/double parameters: one fused pass per parameter (sgd_kernel), in parallel chunks.
// Everything else (CUDA, other dtypes, strided tensors): one foreach pass per operation over all
// of them, a handful of multi-tensor kernels per step on CUDA.
void MaskedSGD::step(double lr, size_t begin, size_t end) {
  TORCH_CHECK_VALUE(begin <= end && end <= params_.size(), "MaskedSGD::step: range [", begin, ", ",
                    end, ") outside the ", params_.size(), " parameters");
  torch::NoGradGuard no_grad;
  std::vector<size_t> idx;  // parameters for the foreach path
  std::vector<at::Tensor> p, g;
  for (size_t i = begin; i < end; ++i) {
    at::Tensor grad = params_[i].grad();
    if (!grad.defined()) continue;
    at::Tensor& p_i = params_[i];
    at::Tensor& buf = buffers_[i];
    if (fusable(p_i, grad, masks_[i], buf)) {
      if (opt_.momentum != 0.0 && !buf.defined()) buf = at::zeros_like(p_i);
      const int64_t n = p_i.numel();
      AT_DISPATCH_FLOATING_TYPES(p_i.scalar_type(), "masked_sgd", [&] {
        scalar_t* pp = p_i.data_ptr<scalar_t>();
        const scalar_t* gp = grad.const_data_ptr<scalar_t>();
        const scalar_t* mp = masks_[i].defined() ? masks_[i].const_data_ptr<scalar_t>() : nullptr;
        scalar_t* bp = opt_.momentum != 0.0 ? buf.data_ptr<scalar_t>() : nullptr;
        const auto s_lr = static_cast<scalar_t>(lr);
        const auto s_wd = static_cast<scalar_t>(opt_.weight_decay);
        const auto s_mu = static_cast<scalar_t>(opt_.momentum);
        at::parallel_for(0, n, 1 << 15, [&](int64_t b, int64_t e) {
          sgd_kernel(pp + b, gp + b, mp ? mp + b : nullptr, bp ? bp + b : nullptr, e - b, s_lr,
                     s_wd, s_mu, opt_.nesterov);
        });
      });
      continue;
    }
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
    return lr;
  }
  return floor_lr + (s.lr - floor_lr) * 0.5 * (1.0 + std::cos(kPi * std::min(1.0, t)));
}

}  // namespace swamp

namespace swamp {

LossScaler::LossScaler(LossScaleOptions options) : o_(options), scale_(options.init_scale) {
  TORCH_CHECK_VALUE(std::isfinite(o_.init_scale) && o_.init_scale > 0.0,
                    "LossScaler: init_scale must be > 0");
  TORCH_CHECK_VALUE(o_.growth_factor > 1.0 && o_.backoff_factor > 0.0 && o_.backoff_factor < 1.0,
                    "LossScaler: growth_factor must be > 1 and backoff_factor in (0, 1)");
  TORCH_CHECK_VALUE(o_.growth_interval >= 1, "LossScaler: growth_interval must be >= 1");
}

bool LossScaler::unscale(const std::vector<at::Tensor>& grads) const {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> finite;
  for (const auto& g : grads) {
    if (!g.defined()) continue;
    g.mul_(1.0 / scale_);
    finite.push_back(at::isfinite(g).all());
  }
  return finite.empty() || at::stack(finite).all().item<bool>();  // one read per step
}

void LossScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ *= o_.backoff_factor;
    tracker_ = 0;
    ++consecutive_;
    return;
  }
  consecutive_ = 0;
  if (++tracker_ >= o_.growth_interval) {
    scale_ *= o_.growth_factor;
    tracker_ = 0;
  }
}

void LossScaler::restore(double scale, int64_t growth_tracker, int64_t consecutive_skips) {
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0.0, "LossScaler: scale must be > 0");
  TORCH_CHECK_VALUE(
      growth_tracker >= 0 && growth_tracker < o_.growth_interval && consecutive_skips >= 0,
      "LossScaler: growth tracker out of range");
  scale_ = scale;
  tracker_ = growth_tracker;
  consecutive_ = consecutive_skips;
}

}  // namespace swamp
