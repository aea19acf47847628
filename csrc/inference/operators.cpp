// The sparse inference operators (swamp/inference.h): a pruned Linear or Conv2d computed from its
// weight in CSR form, registered with the torch dispatcher as swamp::sparse_linear and
// swamp::sparse_conv2d (CPU kernels here; the fake kernels that let torch.compile and
// torch.export trace them are in Python, swamp_ext/inference/operators.py).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../models/layers/conv_kernels.h"
#include "../models/layers/sparse_kernels.h"
#include "swamp/inference.h"

namespace swamp::inference {
namespace {

// The CSR arrays of a [rows, cols] matrix, checked in full (a wrong index would read outside
// the input): both index arrays int32 or both int64, crow_indices non-decreasing from 0 to nnz,
// every column in [0, cols).
template <typename I>
void check_indices(const at::Tensor& crow, const at::Tensor& col, int64_t cols, const char* op) {
  const I* cp = crow.const_data_ptr<I>();
  const int64_t rows = crow.numel() - 1, nnz = col.numel();
  TORCH_CHECK_VALUE(cp[0] == 0 && cp[rows] == nnz, op, ": crow_indices must run from 0 to nnz (",
                    nnz, "), got ", static_cast<int64_t>(cp[0]), " .. ",
                    static_cast<int64_t>(cp[rows]));
  bool sorted = true;
  for (int64_t r = 0; r < rows; ++r) sorted &= cp[r] <= cp[r + 1];
  TORCH_CHECK_VALUE(sorted, op, ": crow_indices must be non-decreasing");
  const I* c = col.const_data_ptr<I>();
  I lo = 0, hi = 0;
  for (int64_t e = 0; e < nnz; ++e) {
    lo = std::min(lo, c[e]);
    hi = std::max(hi, c[e]);
  }
  TORCH_CHECK_VALUE(nnz == 0 || (lo >= 0 && hi < cols), op, ": col_indices must lie in [0, ", cols,
                    "), got values in [", static_cast<int64_t>(lo), ", ", static_cast<int64_t>(hi),
                    "]");
}

void check_csr(const at::Tensor& input, const at::Tensor& crow, const at::Tensor& col,
               const at::Tensor& values, const std::optional<at::Tensor>& bias, int64_t rows,
               int64_t cols, const char* op) {
  TORCH_CHECK_VALUE(input.device().is_cpu(), op, ": runs on the CPU; the input is on ",
                    input.device(), " (to_torch(sparse=False) gives a dense module for GPUs)");
  TORCH_CHECK_VALUE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
                    ": takes float32 or float64 inputs, got ", input.scalar_type());
  TORCH_CHECK_VALUE(values.scalar_type() == input.scalar_type(), op, ": values are ",
                    values.scalar_type(), " but the input is ", input.scalar_type());
  TORCH_CHECK_VALUE(crow.dim() == 1 && col.dim() == 1 && values.dim() == 1, op,
                    ": crow_indices, col_indices and values must be 1-d");
  TORCH_CHECK_VALUE(crow.scalar_type() == col.scalar_type() &&
                        (crow.scalar_type() == at::kInt || crow.scalar_type() == at::kLong),
                    op, ": crow_indices and col_indices must both be int32 or both int64, got ",
                    crow.scalar_type(), " and ", col.scalar_type());
  TORCH_CHECK_VALUE(crow.device().is_cpu() && col.device().is_cpu() && values.device().is_cpu(), op,
                    ": the CSR tensors must be on the CPU");
  TORCH_CHECK_VALUE(crow.numel() == rows + 1, op, ": crow_indices must have ", rows + 1,
                    " entries, got ", crow.numel());
  TORCH_CHECK_VALUE(col.numel() == values.numel(), op, ": ", col.numel(), " col_indices but ",
                    values.numel(), " values");
  TORCH_CHECK_VALUE(crow.is_contiguous() && col.is_contiguous() && values.is_contiguous(), op,
                    ": the CSR tensors must be contiguous");
  if (crow.scalar_type() == at::kInt)
    check_indices<int32_t>(crow, col, cols, op);
  else
    check_indices<int64_t>(crow, col, cols, op);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->numel() == rows &&
                          bias->scalar_type() == input.scalar_type() && bias->device().is_cpu(),
                      op, ": bias must be a CPU ", input.scalar_type(), " vector of ", rows,
                      " entries, got ", bias->sizes(), " ", bias->scalar_type());
  }
}

at::Tensor bias_or_undefined(const std::optional<at::Tensor>& bias) {
  return bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
}

}  // namespace

at::Tensor sparse_linear(const at::Tensor& input, const at::Tensor& crow_indices,
                         const at::Tensor& col_indices, const at::Tensor& values,
                         const std::optional<at::Tensor>& bias, int64_t in_features) {
  constexpr const char* op = "swamp::sparse_linear";
  TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(-1) == in_features, op,
                    ": expected input [..., ", in_features, "], got ", input.sizes());
  const int64_t out = crow_indices.numel() - 1;
  TORCH_CHECK_VALUE(out >= 0, op, ": crow_indices is empty");
  check_csr(input, crow_indices, col_indices, values, bias, out, in_features, op);
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = out;
  const at::Tensor x2 = input.reshape({-1, in_features});
  const int64_t rows = x2.size(0);
  // [rows, out] with the rows contiguous (strides (1, rows)): a following sparse_linear reads
  // it without a copy; reshaped to the input's leading dimensions as a view
  if (rows == 0 || out == 0)
    return at::empty_strided({rows, out}, {1, std::max<int64_t>(rows, 1)}, input.options())
        .zero_()
        .view(shape);
  const at::Tensor y = layers::spmm_csr(crow_indices, col_indices, values, bias_or_undefined(bias),
                                        layers::transposed(x2));
  return y.view(shape);
}

at::Tensor sparse_conv2d(const at::Tensor& input, const at::Tensor& crow_indices,
                         const at::Tensor& col_indices, const at::Tensor& values,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef weight_shape,
                         at::IntArrayRef stride, at::IntArrayRef padding) {
  constexpr const char* op = "swamp::sparse_conv2d";
  TORCH_CHECK_VALUE(weight_shape.size() == 4 && stride.size() == 2 && padding.size() == 2, op,
                    ": weight_shape has 4 entries, stride and padding 2, got ", weight_shape, ", ",
                    stride, ", ", padding);
  const int64_t out = weight_shape[0], in = weight_shape[1], kh = weight_shape[2],
                kw = weight_shape[3];
  TORCH_CHECK_VALUE(out >= 0 && in >= 1 && kh >= 1 && kw >= 1, op, ": bad weight_shape ",
                    weight_shape);
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1 && padding[0] >= 0 && padding[1] >= 0, op,
                    ": strides must be >= 1 and padding >= 0, got ", stride, ", ", padding);
  TORCH_CHECK_VALUE(input.dim() == 4 && input.size(1) == in, op, ": expected input [B, ", in,
                    ", H, W], got ", input.sizes());
  check_csr(input, crow_indices, col_indices, values, bias, out, in * kh * kw, op);
  layers::ConvGeometry g;
  g.in = in;
  g.out = out;
  g.kh = kh;
  g.kw = kw;
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.h = input.size(2);
  g.w = input.size(3);
  g.oh = (g.h + 2 * g.pad_h - kh) / g.stride_h + 1;
  g.ow = (g.w + 2 * g.pad_w - kw) / g.stride_w + 1;
  TORCH_CHECK_VALUE(g.h + 2 * g.pad_h >= kh && g.w + 2 * g.pad_w >= kw, op, ": input ",
                    input.sizes(), " is smaller than the ", kh, "x", kw, " kernel");
  if (input.size(0) == 0 || out == 0)
    return at::zeros({input.size(0), out, g.oh, g.ow}, input.options());
  layers::SparseStructure s;
  s.out = out;
  s.in = in * kh * kw;
  s.nnz = values.numel();
  s.row_ptr = crow_indices.to(at::kLong);
  s.col = col_indices.to(at::kLong);
  return layers::sparse_conv_infer(s, g, values, bias_or_undefined(bias), input);
}

// The schemas; the Python package registers the fake kernels of this module.
TORCH_LIBRARY(swamp, m) {
  m.set_python_module("swamp_ext.inference.operators");
  m.def(
      "sparse_linear(Tensor input, Tensor crow_indices, Tensor col_indices, Tensor values, "
      "Tensor? bias, int in_features) -> Tensor");
  m.def(
      "sparse_conv2d(Tensor input, Tensor crow_indices, Tensor col_indices, Tensor values, "
      "Tensor? bias, int[] weight_shape, int[] stride, int[] padding) -> Tensor");
}

TORCH_LIBRARY_IMPL(swamp, CPU, m) {
  m.impl("sparse_linear", &sparse_linear);
  m.impl("sparse_conv2d", &sparse_conv2d);
}

}  // namespace swamp::inference
