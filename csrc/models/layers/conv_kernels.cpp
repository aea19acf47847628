#include "conv_kernels.h"

#include "vec.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

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


// ---- stride 1: shift and add over zero-padded planes ------------------------------------------
// With the input padded to [Hp, Wp] and the output computed on a grid as wide as the padded
// input (its last kw - 1 columns are discarded), output position o = oy * Wp + ox reads padded
// input o + ky * Wp + kx: every nonzero is one contiguous axpy (or dot) of length
// L = oh * Wp - (kw - 1) over whole planes, with no bounds inside.
bool shift_path(const ConvGeometry& g) { return g.stride_h == 1 && g.stride_w == 1; }

struct ShiftTaps {
  std::vector<int64_t> channel, offset;  // per nonzero (CSR order): input channel, plane offset
};
ShiftTaps shift_taps(const SparseStructure& s, const ConvGeometry& g, int64_t wp) {
  ShiftTaps t;
  t.channel.resize(static_cast<size_t>(s.nnz));
  t.offset.resize(static_cast<size_t>(s.nnz));
  const int64_t* col = s.col.const_data_ptr<int64_t>();
  const int64_t kk = g.kh * g.kw;
  for (int64_t e = 0; e < s.nnz; ++e) {
    t.channel[e] = col[e] / kk;
    t.offset[e] = (col[e] % kk) / g.kw * wp + col[e] % g.kw;
  }
  return t;
}

at::Tensor padded(const at::Tensor& x, const ConvGeometry& g) {
  if (g.pad_h == 0 && g.pad_w == 0) return x.contiguous();
  return at::constant_pad_nd(x, {g.pad_w, g.pad_w, g.pad_h, g.pad_h}, 0.0).contiguous();
}

// out[q] = init + sum_e v[e] * src[e][q] for q in [0, n): the sum kept in registers over the
// nonzeros, 4 vectors of q at a time (forward: src = an input plane shifted by the tap; input
// gradient: a gradient plane shifted back).
template <typename T>
SWAMP_TARGET_CLONES void gather_taps(int64_t n, int64_t taps, const T* v, const T* const* src,
                                     T init, T* out) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::lanes;
  int64_t q = 0;
  for (; q + 4 * L <= n; q += 4 * L) {
    V a0 = {};
    a0 += init;
    V a1 = a0, a2 = a0, a3 = a0;
    for (int64_t e = 0; e < taps; ++e) {
      const T w = v[e];
      const T* x = src[e] + q;
      a0 += w * Vec<T>::load(x);
      a1 += w * Vec<T>::load(x + L);
      a2 += w * Vec<T>::load(x + 2 * L);
      a3 += w * Vec<T>::load(x + 3 * L);
    }
    Vec<T>::store(out + q, a0);
    Vec<T>::store(out + q + L, a1);
    Vec<T>::store(out + q + 2 * L, a2);
    Vec<T>::store(out + q + 3 * L, a3);
  }
  for (; q < n; ++q) {
    T acc = init;
    for (int64_t e = 0; e < taps; ++e) acc += v[e] * src[e][q];
    out[q] = acc;
  }
}

// sum over q in [0, n) of a[q] * b[q], in a fixed order (4 vector accumulators).
template <typename T>
SWAMP_TARGET_CLONES T vdot(int64_t n, const T* a, const T* b) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::lanes;
  V a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t q = 0;
  for (; q + 4 * L <= n; q += 4 * L) {
    a0 += Vec<T>::load(a + q) * Vec<T>::load(b + q);
    a1 += Vec<T>::load(a + q + L) * Vec<T>::load(b + q + L);
    a2 += Vec<T>::load(a + q + 2 * L) * Vec<T>::load(b + q + 2 * L);
    a3 += Vec<T>::load(a + q + 3 * L) * Vec<T>::load(b + q + 3 * L);
  }
  const V acc = (a0 + a1) + (a2 + a3);
  T sum = 0;
  for (int64_t j = 0; j < L; ++j) sum += acc[j];
  for (; q < n; ++q) sum += a[q] * b[q];
  return sum;
}

at::Tensor shift_forward(const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values,
                         const at::Tensor& bias, const at::Tensor& x) {
  const at::Tensor xp = padded(x, g);
  const int64_t B = x.size(0), hp = xp.size(2), wp = xp.size(3);
  const int64_t L = g.oh * wp - (g.kw - 1);
  const ShiftTaps taps = shift_taps(s, g, wp);
  at::Tensor y = at::empty({B, g.out, g.oh, wp}, x.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_forward", [&] {
    const scalar_t* xv = xp.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    const scalar_t* bv = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yv = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * g.out, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> src;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / g.out, co = i % g.out;
        const scalar_t* in = xv + b * g.in * hp * wp;
        src.clear();
        for (int64_t e = rp[co]; e < rp[co + 1]; ++e)
          src.push_back(in + taps.channel[e] * hp * wp + taps.offset[e]);
        scalar_t* out = yv + i * g.oh * wp;
        gather_taps<scalar_t>(L, rp[co + 1] - rp[co], v + rp[co], src.data(),
                              bv ? bv[co] : scalar_t(0), out);
        std::fill(out + L, out + g.oh * wp, scalar_t(0));  // discarded columns
      }
    });
  });
  return y.narrow(3, 0, g.ow).contiguous();
}

// gy on the output grid as wide as the padded input, zeros in the extra columns.
at::Tensor widened(const at::Tensor& gy, int64_t wp, const ConvGeometry& g) {
  if (wp == g.ow) return gy.contiguous();
  return at::constant_pad_nd(gy, {0, wp - g.ow}, 0.0).contiguous();
}

// The input gradient as a gather: padded input position q receives w * gy[q - offset] from every
// nonzero whose tap reads it. gy sits on the wide grid with `front` zeros before each plane and
// zeros after, so that q - offset never leaves its plane's buffer.
at::Tensor shift_input_grad(const SparseStructure& s, const ConvGeometry& g,
                            const at::Tensor& values, const at::Tensor& gy) {
  const int64_t hp = g.h + 2 * g.pad_h, wp = g.w + 2 * g.pad_w;
  const int64_t B = gy.size(0), kk = g.kh * g.kw;
  const int64_t front = g.kh * wp, span = front + g.oh * wp + g.kh * wp;  // per plane
  at::Tensor gw = at::zeros({B, g.out, span}, gy.options());
  gw.narrow(2, front, g.oh * wp).view({B, g.out, g.oh, wp}).narrow(3, 0, g.ow).copy_(gy);
  at::Tensor dxp = at::empty({B, g.in, hp, wp}, gy.options());
  const int64_t* cp = s.col_ptr.const_data_ptr<int64_t>();
  const int64_t* crow = s.csc_row.const_data_ptr<int64_t>();
  const int64_t* cpos = s.csc_pos.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "sparse_conv_input_grad", [&] {
    const scalar_t* gv = gw.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    scalar_t* dv = dxp.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * g.in, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> src;
      std::vector<scalar_t> w;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / g.in, ci = i % g.in;
        src.clear();
        w.clear();
        for (int64_t c = ci * kk; c < (ci + 1) * kk; ++c) {
          const int64_t off = (c % kk) / g.kw * wp + c % g.kw;
          for (int64_t e = cp[c]; e < cp[c + 1]; ++e) {
            w.push_back(v[cpos[e]]);
            src.push_back(gv + (b * g.out + crow[e]) * span + front - off);
          }
        }
        gather_taps<scalar_t>(hp * wp, static_cast<int64_t>(w.size()), w.data(), src.data(),
                              scalar_t(0), dv + i * hp * wp);
      }
    });
  });
  if (g.pad_h == 0 && g.pad_w == 0) return dxp;
  return dxp.narrow(2, g.pad_h, g.h).narrow(3, g.pad_w, g.w).contiguous();
}

at::Tensor shift_weight_grad(const SparseStructure& s, const ConvGeometry& g,
                             const at::Tensor& gy, const at::Tensor& x) {
  const at::Tensor xp = padded(x, g);
  const int64_t B = x.size(0), hp = xp.size(2), wp = xp.size(3);
  const int64_t L = g.oh * wp - (g.kw - 1);
  const at::Tensor gw = widened(gy, wp, g);
  const ShiftTaps taps = shift_taps(s, g, wp);
  at::Tensor dw = at::zeros({s.nnz}, x.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_weight_grad", [&] {
    const scalar_t* gv = gw.const_data_ptr<scalar_t>();
    const scalar_t* xv = xp.const_data_ptr<scalar_t>();
    scalar_t* out = dw.mutable_data_ptr<scalar_t>();
    // one output channel per task, its nonzeros' sums over the batch in batch order
    at::parallel_for(0, g.out, 1, [&](int64_t begin, int64_t end) {
      for (int64_t co = begin; co < end; ++co)
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t* go = gv + (b * g.out + co) * g.oh * wp;
          const scalar_t* in = xv + b * g.in * hp * wp;
          for (int64_t e = rp[co]; e < rp[co + 1]; ++e)
            out[e] += vdot<scalar_t>(L, go, in + taps.channel[e] * hp * wp + taps.offset[e]);
        }
    });
  });
  return dw;
}

}  // namespace

at::Tensor sparse_conv_forward(const SparseStructure& s, const ConvGeometry& g,
                               const at::Tensor& values, const at::Tensor& bias,
                               const at::Tensor& x_in) {
  check(s, g, values);
  const at::Tensor x = x_in.contiguous();
  if (shift_path(g)) return shift_forward(s, g, values, bias, x);
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
  if (shift_path(g)) return shift_input_grad(s, g, values, gy);
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
  if (shift_path(g)) return shift_weight_grad(s, g, gy, x);
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
