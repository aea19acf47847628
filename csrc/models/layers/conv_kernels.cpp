#include "conv_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace swamp::layers {
namespace {

// The output positions [lo, hi) along one axis whose input position o * stride - pad + k lies in
// [0, n).
struct Span {
  int64_t lo = 0, hi = 0;
};
Span span(int64_t n, int64_t out, int64_t stride, int64_t pad, int64_t k) {
  const int64_t first = pad - k;  // o * stride >= pad - k
  const int64_t last = n - 1 + pad - k;  // o * stride <= n - 1 + pad - k
  Span s;
  if (last < 0) return s;
  s.lo = first > 0 ? (first + stride - 1) / stride : 0;
  s.hi = std::min(out, last / stride + 1);
  if (s.hi < s.lo) s.hi = s.lo;
  return s;
}

// Where nonzero `c` (a column of the [out, in * kh * kw] view) reads: input channel and offset.
struct Tap {
  int64_t ci, ky, kx;
  Span ys, xs;
};
Tap tap(const ConvGeometry& g, int64_t c) {
  const int64_t kk = g.kh * g.kw;
  Tap t{c / kk, (c % kk) / g.kw, c % g.kw, {}, {}};
  t.ys = span(g.h, g.oh, g.stride_h, g.pad_h, t.ky);
  t.xs = span(g.w, g.ow, g.stride_w, g.pad_w, t.kx);
  return t;
}

// dst[ox] (+)= v * src[ox * stride] over the span, rows of one plane pair.
template <typename T>
inline void axpy_rows(const Tap& t, const ConvGeometry& g, T v, const T* in, T* out) {
  const int64_t n = t.xs.hi - t.xs.lo;
  if (n <= 0) return;
  for (int64_t oy = t.ys.lo; oy < t.ys.hi; ++oy) {
    const T* src = in + (oy * g.stride_h - g.pad_h + t.ky) * g.w +
                   (t.xs.lo * g.stride_w - g.pad_w + t.kx);
    T* dst = out + oy * g.ow + t.xs.lo;
    if (g.stride_w == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] += v * src[i];
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] += v * src[i * g.stride_w];
    }
  }
}

// The transpose: in[...] += v * out[ox] (the input gradient).
template <typename T>
inline void axpy_rows_t(const Tap& t, const ConvGeometry& g, T v, const T* gout, T* gin) {
  const int64_t n = t.xs.hi - t.xs.lo;
  if (n <= 0) return;
  for (int64_t oy = t.ys.lo; oy < t.ys.hi; ++oy) {
    T* dst = gin + (oy * g.stride_h - g.pad_h + t.ky) * g.w +
             (t.xs.lo * g.stride_w - g.pad_w + t.kx);
    const T* src = gout + oy * g.ow + t.xs.lo;
    if (g.stride_w == 1) {
      for (int64_t i = 0; i < n; ++i) dst[i] += v * src[i];
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i * g.stride_w] += v * src[i];
    }
  }
}

// sum over the span of gout[ox] * in[ox * stride] (the weight gradient of one nonzero).
template <typename T>
inline T dot_rows(const Tap& t, const ConvGeometry& g, const T* gout, const T* in) {
  const int64_t n = t.xs.hi - t.xs.lo;
  T acc = 0;
  if (n <= 0) return acc;
  for (int64_t oy = t.ys.lo; oy < t.ys.hi; ++oy) {
    const T* a = gout + oy * g.ow + t.xs.lo;
    const T* b = in + (oy * g.stride_h - g.pad_h + t.ky) * g.w +
                 (t.xs.lo * g.stride_w - g.pad_w + t.kx);
    T row = 0;
    if (g.stride_w == 1) {
      for (int64_t i = 0; i < n; ++i) row += a[i] * b[i];
    } else {
      for (int64_t i = 0; i < n; ++i) row += a[i] * b[i * g.stride_w];
    }
    acc += row;
  }
  return acc;
}

void check(const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values) {
  TORCH_CHECK(s.out == g.out && s.in == g.in * g.kh * g.kw, "sparse conv: structure ", s.out, "x",
              s.in, " does not match the convolution");
  TORCH_CHECK(values.numel() == s.nnz && values.is_contiguous(), "sparse conv: expected ", s.nnz,
              " contiguous values, got ", values.numel());
}

}  // namespace

at::Tensor sparse_conv_forward(const SparseStructure& s, const ConvGeometry& g,
                               const at::Tensor& values, const at::Tensor& bias,
                               const at::Tensor& x_in) {
  check(s, g, values);
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), plane_in = g.h * g.w, plane_out = g.oh * g.ow;
  at::Tensor y = bias.defined()
                     ? bias.view({1, g.out, 1, 1}).expand({B, g.out, g.oh, g.ow}).contiguous()
                     : at::zeros({B, g.out, g.oh, g.ow}, x.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  const int64_t* col = s.col.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_forward", [&] {
    const scalar_t* xv = x.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    scalar_t* yv = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * g.out, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / g.out, co = i % g.out;
        scalar_t* out = yv + i * plane_out;
        for (int64_t e = rp[co]; e < rp[co + 1]; ++e) {
          const Tap t = tap(g, col[e]);
          axpy_rows(t, g, v[e], xv + (b * g.in + t.ci) * plane_in, out);
        }
      }
    });
  });
  return y;
}

at::Tensor sparse_conv_input_grad(const SparseStructure& s, const ConvGeometry& g,
                                  const at::Tensor& values, const at::Tensor& gy_in) {
  check(s, g, values);
  const at::Tensor gy = gy_in.contiguous();
  const int64_t B = gy.size(0), plane_in = g.h * g.w, plane_out = g.oh * g.ow;
  const int64_t kk = g.kh * g.kw;
  at::Tensor dx = at::zeros({B, g.in, g.h, g.w}, gy.options());
  const int64_t* cp = s.col_ptr.const_data_ptr<int64_t>();
  const int64_t* crow = s.csc_row.const_data_ptr<int64_t>();
  const int64_t* cpos = s.csc_pos.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "sparse_conv_input_grad", [&] {
    const scalar_t* gv = gy.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    scalar_t* dv = dx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * g.in, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / g.in, ci = i % g.in;
        scalar_t* gin = dv + i * plane_in;
        for (int64_t c = ci * kk; c < (ci + 1) * kk; ++c) {
          const Tap t = tap(g, c);
          for (int64_t e = cp[c]; e < cp[c + 1]; ++e)
            axpy_rows_t(t, g, v[cpos[e]], gv + (b * g.out + crow[e]) * plane_out, gin);
        }
      }
    });
  });
  return dx;
}

at::Tensor sparse_conv_weight_grad(const SparseStructure& s, const ConvGeometry& g,
                                   const at::Tensor& gy_in, const at::Tensor& x_in) {
  const at::Tensor gy = gy_in.contiguous(), x = x_in.contiguous();
  const int64_t B = x.size(0), plane_in = g.h * g.w, plane_out = g.oh * g.ow;
  at::Tensor dw = at::empty({s.nnz}, x.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  const int64_t* col = s.col.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_weight_grad", [&] {
    const scalar_t* gv = gy.const_data_ptr<scalar_t>();
    const scalar_t* xv = x.const_data_ptr<scalar_t>();
    scalar_t* out = dw.mutable_data_ptr<scalar_t>();
    // one output channel's nonzeros per task: every sum in a fixed order (reproducible)
    at::parallel_for(0, g.out, 1, [&](int64_t begin, int64_t end) {
      for (int64_t co = begin; co < end; ++co)
        for (int64_t e = rp[co]; e < rp[co + 1]; ++e) {
          const Tap t = tap(g, col[e]);
          scalar_t acc = 0;
          for (int64_t b = 0; b < B; ++b)
            acc += dot_rows(t, g, gv + (b * g.out + co) * plane_out,
                            xv + (b * g.in + t.ci) * plane_in);
          out[e] = acc;
        }
    });
  });
  return dw;
}

}  // namespace swamp::layers
