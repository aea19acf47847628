// Autograd functions of swamp::layers::Linear (internal to swamp_core).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

namespace swamp::layers {

struct SparseStructure;

// x [B, N*in] or particle-major [N, B, in] through the sparse weight `values`; the weight gradient
// is computed at the nonzeros only.
at::Tensor sparse_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& bias,
                         const std::shared_ptr<SparseStructure>& s, int64_t particles);
// Particle-major x [N, B, in] through the dense stacked weight [N*out, in]: y[n] = x[n] w[n]^T +
// b[n], the weight gradient in the parameter's layout.
at::Tensor stacked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          int64_t particles);

}  // namespace swamp::layers
