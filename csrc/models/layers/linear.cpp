// swamp::layers::Linear: dense, stacked (particle-major) and sparse (see swamp/layers.h).
#include <ATen/Functions.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include "linear_autograd.h"
#include "sparse_kernels.h"
#include "swamp/layers.h"

namespace swamp::layers {

LinearImpl::LinearImpl(int64_t in, int64_t out, int64_t particles, bool bias)
    : torch::nn::LinearImpl(torch::nn::LinearOptions(in, out * particles).bias(bias)),
      in_(in),
      out_(out),
      particles_(particles) {
  TORCH_CHECK_VALUE(particles >= 1, "Linear: particles must be >= 1, got ", particles);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  const bool pm = x.dim() == 3;  // particle-major [N, B, in], else stacked [B, N*in]
  if (pm) {
    TORCH_CHECK_VALUE(x.size(0) == particles_ && x.size(2) == in_, "Linear: expected input [",
                      particles_, ", B, ", in_, "], got ", x.sizes());
  } else {
    TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == particles_ * in_, "Linear: expected input [B, ",
                      particles_ * in_, "], got ", x.sizes());
  }
  // The sparse kernels take either layout; they work on activations with the batch contiguous
  // (strides (1, B)) and return that layout, so that a following sparse layer reads it as is.
  if (sparse_) {  // the sparse kernels compute in float32, also under autocast
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const bool low = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
    return sparse_linear(low ? x.to(at::kFloat) : x, values_, bias, sparse_, particles_);
  }
  if (pm) return stacked_linear(x.contiguous(), weight, bias, particles_);
  if (particles_ == 1) return torch::nn::LinearImpl::forward(x);
  return from_particle_major(forward(to_particle_major(x, particles_)));
}

void LinearImpl::set_sparse(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(weight.device().is_cpu(),
                    "Linear: sparse mode needs CPU tensors, the weight is on ", weight.device());
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == out_ && mask.size(1) == in_,
                    "Linear: sparse mask must be [", out_, ", ", in_, "], got ", mask.sizes());
  enter_sparse(mask, particles_);
}

}  // namespace swamp::layers
