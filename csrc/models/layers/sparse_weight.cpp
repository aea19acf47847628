// Sparse mode shared by Linear and Conv2d: the weight's unpruned entries as trainable values, in
// the order of the mask's CSR index (see swamp/layers.h).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include "sparse_kernels.h"
#include "swamp/layers.h"

namespace swamp::layers {

void SparseWeightLayer::enter_sparse(const at::Tensor& mask2d, int64_t particles) {
  if (sparse_) clear_sparse();
  const at::Tensor& w = dense_weight();
  weight_shape_.assign(w.sizes().begin(), w.sizes().end());
  sparse_particles_ = particles;
  sparse_ = build_structure(mask2d);
  load_from_dense();
}

void SparseWeightLayer::load_from_dense() {
  TORCH_CHECK(sparse_, "sparse layer: not in sparse mode");
  torch::NoGradGuard no_grad;
  const int64_t N = sparse_particles_;
  values_ = dense_weight()
                .detach()
                .view({N, sparse_->out * sparse_->in})
                .index_select(1, sparse_->positions)
                .reshape({N * sparse_->nnz})
                .set_requires_grad(true);
}

at::Tensor SparseWeightLayer::scattered(const at::Tensor& values) const {
  TORCH_CHECK(sparse_, "sparse layer: not in sparse mode");
  const int64_t N = sparse_particles_;
  TORCH_CHECK_VALUE(values.numel() == N * sparse_->nnz, "sparse layer: expected ", N * sparse_->nnz,
                    " values, got ", values.numel());
  return at::zeros({N, sparse_->out * sparse_->in}, values.options())
      .index_copy(1, sparse_->positions, values.reshape({N, sparse_->nnz}))
      .view(weight_shape_);
}

at::Tensor SparseWeightLayer::dense_from_values(const at::Tensor& values) const {
  torch::NoGradGuard no_grad;
  return scattered(values.detach());
}

void SparseWeightLayer::sync_dense() {
  torch::NoGradGuard no_grad;
  dense_weight().copy_(dense_from_values(values_));
}

void SparseWeightLayer::clear_sparse() {
  if (!sparse_) return;
  sync_dense();
  sparse_.reset();
  values_ = at::Tensor();
}

}  // namespace swamp::layers
