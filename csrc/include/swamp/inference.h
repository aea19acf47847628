// Sparse inference: a pruned network computed from its nonzeros only, on the CPU.
//
// Operators (registered with the torch dispatcher when swamp_core loads, so also callable as
// torch.ops.swamp.* from Python and through c10::Dispatcher from C++; plain functions here):
//   swamp::sparse_linear(input [..., in], crow_indices [out + 1], col_indices [nnz], values [nnz],
//                        bias? [out], in_features) -> [..., out]
//       y = x W^T + b with W the [out, in] CSR matrix. The output has its rows contiguous
//       (strides (1, rows) for a 2-d input), so that a following sparse_linear reads it without
//       a copy; its values are those of the dense product up to rounding.
//   swamp::sparse_conv2d(input [B, in, H, W], crow_indices, col_indices, values, bias? [out],
//                        weight_shape [out, in, kh, kw], stride [2], padding [2]) -> [B, out, OH,
//                        OW]
//       torch's conv2d (dilation 1, groups 1, zero padding) with the weight seen as the
//       [out, in * kh * kw] CSR matrix; contiguous NCHW output.
// Inputs: float32 or float64 on the CPU; index tensors both int32 or both int64. Every index is
// checked before use: bad input raises c10::ValueError naming the problem.
//
// Compressed models: load_compressed() reads a CSR file (swamp_ext's `export --format csr`:
// safetensors, metadata format "swamp_ext-csr-1") of a built-in model and runs it with its pruned
// layers sparse, without Python.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "swamp/export.h"
#include "swamp/models.h"

namespace swamp::inference {

// swamp::sparse_linear (above): input @ W^T + bias with W the [out, in_features] CSR matrix.
SWAMP_API at::Tensor sparse_linear(const at::Tensor& input, const at::Tensor& crow_indices,
                                   const at::Tensor& col_indices, const at::Tensor& values,
                                   const std::optional<at::Tensor>& bias, int64_t in_features);

// swamp::sparse_conv2d (above): conv2d with the weight of `weight_shape` in CSR form.
SWAMP_API at::Tensor sparse_conv2d(const at::Tensor& input, const at::Tensor& crow_indices,
                                   const at::Tensor& col_indices, const at::Tensor& values,
                                   const std::optional<at::Tensor>& bias,
                                   at::IntArrayRef weight_shape, at::IntArrayRef stride,
                                   at::IntArrayRef padding);

// A built-in model loaded from a CSR file, in eval mode, its pruned layers sparse.
struct SWAMP_API CompressedModel {
  std::string model;  // the zoo's name, e.g. "lenet_300_100"
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  int64_t round = -1;
  ModelPtr net;
  // Pruned layers running on the sparse kernels ("fc1.weight", ...), the rest dense.
  std::vector<std::string> sparse_layers;
  // Nonzeros and entries of the pruned weights (density = nonzeros / prunable).
  int64_t nonzeros = 0, prunable = 0;

  // Logits for x [B, *input_shape] (float32, CPU), without autograd.
  at::Tensor forward(const at::Tensor& x) const;
};

// Reads `path` (checked as any safetensors file, then as a CSR file of a built-in model: every
// index and shape; a bad file raises c10::ValueError naming it and what is wrong).
SWAMP_API CompressedModel load_compressed(const std::string& path);

}  // namespace swamp::inference
