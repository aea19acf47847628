// swamp::layers::Linear: dense, stacked (particle-major) and sparse (see swamp/layers.h).
#include <ATen/Functions.h>
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
  if (sparse_) return sparse_linear(x, values_, bias, sparse_, particles_);
  if (pm) return stacked_linear(x.contiguous(), weight, bias, particles_);
  if (particles_ == 1) return torch::nn::LinearImpl::forward(x);
  return from_particle_major(forward(to_particle_major(x, particles_)));
}

void LinearImpl::set_sparse(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(weight.device().is_cpu(),
                    "Linear: sparse mode needs CPU tensors, the weight is on ", weight.device());
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == out_ && mask.size(1) == in_,
                    "Linear: sparse mask must be [", out_, ", ", in_, "], got ", mask.sizes());
  if (sparse_) clear_sparse();
  sparse_ = build_structure(mask);
  load_from_dense();
}

void LinearImpl::load_from_dense() {
  TORCH_CHECK(sparse_, "Linear: not in sparse mode");
  torch::NoGradGuard no_grad;
  values_ = weight.detach()
                .view({particles_, out_ * in_})
                .index_select(1, sparse_->positions)
                .reshape({particles_ * sparse_->nnz})
                .set_requires_grad(true);
}

at::Tensor LinearImpl::dense_from_values(const at::Tensor& values) const {
  TORCH_CHECK(sparse_, "Linear: not in sparse mode");
  TORCH_CHECK_VALUE(values.numel() == particles_ * sparse_->nnz, "Linear: expected ",
                    particles_ * sparse_->nnz, " values, got ", values.numel());
  torch::NoGradGuard no_grad;
  return at::zeros({particles_, out_ * in_}, values.options())
      .index_copy_(1, sparse_->positions, values.detach().reshape({particles_, sparse_->nnz}))
      .view({particles_ * out_, in_});
}

void LinearImpl::sync_dense() {
  torch::NoGradGuard no_grad;
  weight.copy_(dense_from_values(values_));
}

void LinearImpl::clear_sparse() {
  if (!sparse_) return;
  sync_dense();
  sparse_.reset();
  values_ = at::Tensor();
}

}  // namespace swamp::layers
