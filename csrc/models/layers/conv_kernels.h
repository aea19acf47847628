// Direct sparse convolution kernels (CPU): a pruned Conv2d's nonzeros, indexed by the
// linear layers' SparseStructure over the weight seen as [out, in * kh * kw], applied plane by
// plane: each nonzero adds a shifted, zero-padded input plane times its value to an output
// plane. No im2col, no dense weight: the cost falls with the density. Internal to swamp_core (the
// layer, and when it uses them: swamp/layers.h, conv.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

#include "sparse_kernels.h"

namespace swamp::layers {

// One convolution's shape: dilation 1, zero padding; forward takes any stride (over the input's
// phases), backward stride 1. `particles` convolutions side by side (a stacked layer: groups =
// particles, one structure, own values), `in` and `out` channels each.
struct ConvGeometry {
  int64_t particles = 1;
  int64_t in = 0, out = 0, kh = 0, kw = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t h = 0, w = 0;    // input plane
  int64_t oh = 0, ow = 0;  // output plane
};

// The input x [B, particles * in, h, w] as the kernels read it (zero-padded, split into phases
// for a stride > 1; kept for backward).
at::Tensor sparse_conv_prepare(const at::Tensor& x, const ConvGeometry& g);
// y [B, particles * out, oh, ow] = conv(x) with the weights `values` ([particles * nnz], CSR
// order per particle); `prepared` from sparse_conv_prepare.
at::Tensor sparse_conv_forward(const SparseStructure& s, const ConvGeometry& g,
                               const at::Tensor& values, const at::Tensor& bias,
                               const at::Tensor& prepared);
// y = conv(x) for one particle without keeping anything for backward (inference): each image's
// planes prepared in a buffer that stays in cache, where the batch has an image per thread.
at::Tensor sparse_conv_infer(const SparseStructure& s, const ConvGeometry& g,
                             const at::Tensor& values, const at::Tensor& bias, const at::Tensor& x);
// From gy: the input gradient [B, particles * in, h, w] and the weight gradient at the nonzeros
// only ([particles * nnz], CSR order), each where asked for.
std::pair<at::Tensor, at::Tensor> sparse_conv_backward(
    const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values, const at::Tensor& gy,
    const at::Tensor& prepared, bool input_grad, bool weight_grad);

}  // namespace swamp::layers
