#include "conv_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "vec.h"

namespace swamp::layers {
namespace {

void check(const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values) {
  TORCH_CHECK(s.out == g.out && s.in == g.in * g.kh * g.kw && g.particles >= 1,
              "sparse conv: structure ", s.out, "x", s.in, " does not match the convolution");
  TORCH_CHECK(values.numel() == g.particles * s.nnz && values.is_contiguous(),
              "sparse conv: expected ", g.particles * s.nnz, " contiguous values, got ",
              values.numel());
}

// dst[0, n) = src[0, m) followed by zeros (m <= n).
template <typename T>
void copy_then_zero(const T* src, int64_t m, T* dst, int64_t n) {
  std::copy_n(src, m, dst);
  std::fill(dst + m, dst + n, T(0));
}

// Shift and add over zero-padded planes (stride 1). With the input padded to [Hp, Wp] and the
// output computed on a grid as wide as the padded input (its last kw - 1 columns are discarded),
// output position o = oy * Wp + ox reads padded input o + ky * Wp + kx: every nonzero is one
// contiguous axpy (or dot) of length L = oh * Wp - (kw - 1) over whole planes, with no bounds
// inside.

struct ShiftTaps {
  std::vector<int64_t> channel, offset;  // per nonzero (CSR order): input channel, plane offset
};
// With a stride, the planes are the input's phases (see phases() below): tap (ky, kx) of input
// channel c reads phase (ky % stride_h, kx % stride_w) of c shifted by (ky / stride_h,
// kx / stride_w) on the phase grid, `wp` wide.
ShiftTaps shift_taps(const SparseStructure& s, const ConvGeometry& g, int64_t wp) {
  ShiftTaps t;
  t.channel.resize(static_cast<size_t>(s.nnz));
  t.offset.resize(static_cast<size_t>(s.nnz));
  const int64_t* col = s.col.const_data_ptr<int64_t>();
  const int64_t kk = g.kh * g.kw, sh = g.stride_h, sw = g.stride_w;
  for (int64_t e = 0; e < s.nnz; ++e) {
    const int64_t c = col[e] / kk, ky = (col[e] % kk) / g.kw, kx = col[e] % g.kw;
    t.channel[e] = (c * sh + ky % sh) * sw + kx % sw;
    t.offset[e] = ky / sh * wp + kx / sw;
  }
  return t;
}

// A strided convolution as a stride-1 one over the input's phases: each zero-padded input plane
// split into stride_h x stride_w planes of ceil(hp / stride_h) x ceil(wp / stride_w), phase
// (py, px) holding padded positions (py + i * stride_h, px + j * stride_w) (zeros past the edge):
// [B, in * stride_h * stride_w, hq, wq], channel c's phases at c * stride_h * stride_w + ...
// With stride 1 the one phase is the zero-padded plane.
struct PhaseGrid {
  int64_t hq = 0, wq = 0;
  int64_t per_channel() const { return hq * wq; }
};
PhaseGrid phase_grid(const ConvGeometry& g) {
  const int64_t hp = g.h + 2 * g.pad_h, wp = g.w + 2 * g.pad_w;
  return {(hp + g.stride_h - 1) / g.stride_h, (wp + g.stride_w - 1) / g.stride_w};
}

// One input plane [h, w] as its stride_h * stride_w phases, written to d, phase k at
// d + k * phase_stride.
template <typename T>
void phase_plane(const T* plane, T* d, const ConvGeometry& g, const PhaseGrid& q,
                 int64_t phase_stride) {
  const int64_t sh = g.stride_h, sw = g.stride_w, wq = q.wq;
  for (int64_t ph = 0; ph < sh * sw; ++ph) {
    const int64_t py = ph / sw, px = ph % sw;
    T* dp = d + ph * phase_stride;
    for (int64_t r = 0; r < q.hq; ++r, dp += wq) {
      // phase row r: input row y, columns x0 + k * sw for k in [k0, k1)
      const int64_t y = py + r * sh - g.pad_h;
      std::fill_n(dp, wq, T(0));
      if (y < 0 || y >= g.h) continue;
      const int64_t x0 = px - g.pad_w;
      const int64_t k0 = x0 >= 0 ? 0 : (-x0 + sw - 1) / sw;
      const int64_t k1 = std::min(wq, (g.w - x0 + sw - 1) / sw);
      const T* row = plane + y * g.w;
      if (sw == 1) {
        if (k1 > k0) std::copy(row + x0 + k0, row + x0 + k1, dp + k0);
      } else {
        for (int64_t k = k0; k < k1; ++k) dp[k] = row[x0 + k * sw];
      }
    }
  }
}

at::Tensor phases(const at::Tensor& x, const ConvGeometry& g) {
  const at::Tensor xc = x.contiguous();
  const PhaseGrid q = phase_grid(g);
  const int64_t sh = g.stride_h, sw = g.stride_w, planes = x.size(0) * x.size(1);
  at::Tensor out = at::empty({x.size(0), x.size(1) * sh * sw, q.hq, q.wq}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_phases", [&] {
    const scalar_t* src = xc.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        phase_plane(src + i * g.h * g.w, dst + i * sh * sw * q.per_channel(), g, q,
                    q.per_channel());
    });
  });
  return out;
}

// out[q] = init + sum_e v[e] * src[e][q] for q in [0, n): the sum kept in registers over the
// nonzeros, 4 vectors of q at a time (forward: src = an input plane shifted by the tap; input
// gradient: a gradient plane shifted back). Bytes: the vector width.
template <typename T, int Bytes>
inline __attribute__((always_inline)) void gather_taps_body(int64_t n, int64_t taps, const T* v,
                                                            const T* const* src, T init, T* out) {
  using W = Vec<T, Bytes>;
  using V = typename W::type;
  constexpr int64_t L = W::lanes;
  int64_t q = 0;
  for (; q + 4 * L <= n; q += 4 * L) {
    V a0 = {};
    a0 += init;
    V a1 = a0, a2 = a0, a3 = a0;
    for (int64_t e = 0; e < taps; ++e) {
      const T w = v[e];
      const T* x = src[e] + q;
      a0 += w * W::load(x);
      a1 += w * W::load(x + L);
      a2 += w * W::load(x + 2 * L);
      a3 += w * W::load(x + 3 * L);
    }
    W::store(out + q, a0);
    W::store(out + q + L, a1);
    W::store(out + q + 2 * L, a2);
    W::store(out + q + 3 * L, a3);
  }
  for (; q + L <= n; q += L) {
    V a0 = {};
    a0 += init;
    for (int64_t e = 0; e < taps; ++e) a0 += v[e] * W::load(src[e] + q);
    W::store(out + q, a0);
  }
  for (; q < n; ++q) {
    T acc = init;
    for (int64_t e = 0; e < taps; ++e) acc += v[e] * src[e][q];
    out[q] = acc;
  }
}

// sum over q in [0, n) of a[q] * b[q], in a fixed order (4 vector accumulators).
template <typename T, int Bytes>
inline __attribute__((always_inline)) T vdot_body(int64_t n, const T* a, const T* b) {
  using W = Vec<T, Bytes>;
  using V = typename W::type;
  constexpr int64_t L = W::lanes;
  V a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t q = 0;
  for (; q + 4 * L <= n; q += 4 * L) {
    a0 += W::load(a + q) * W::load(b + q);
    a1 += W::load(a + q + L) * W::load(b + q + L);
    a2 += W::load(a + q + 2 * L) * W::load(b + q + 2 * L);
    a3 += W::load(a + q + 3 * L) * W::load(b + q + 3 * L);
  }
  for (; q + L <= n; q += L) a0 += W::load(a + q) * W::load(b + q);
  const V acc = (a0 + a1) + (a2 + a3);
  T sum = 0;
  for (int64_t j = 0; j < L; ++j) sum += acc[j];
  for (; q < n; ++q) sum += a[q] * b[q];
  return sum;
}

// The bodies on 64-byte vectors where the CPU has AVX-512, on 32-byte ones (AVX2 clone or the
// baseline) elsewhere.
template <typename T>
SWAMP_TARGET_AVX512 void gather_taps_512(int64_t n, int64_t taps, const T* v, const T* const* src,
                                         T init, T* out) {
  gather_taps_body<T, 64>(n, taps, v, src, init, out);
}
template <typename T>
SWAMP_TARGET_CLONES void gather_taps_256(int64_t n, int64_t taps, const T* v, const T* const* src,
                                         T init, T* out) {
  gather_taps_body<T, 32>(n, taps, v, src, init, out);
}
template <typename T>
void gather_taps(int64_t n, int64_t taps, const T* v, const T* const* src, T init, T* out) {
  if (cpu_has_avx512())
    gather_taps_512<T>(n, taps, v, src, init, out);
  else
    gather_taps_256<T>(n, taps, v, src, init, out);
}
template <typename T>
SWAMP_TARGET_AVX512 T vdot_512(int64_t n, const T* a, const T* b) {
  return vdot_body<T, 64>(n, a, b);
}
template <typename T>
SWAMP_TARGET_CLONES T vdot_256(int64_t n, const T* a, const T* b) {
  return vdot_body<T, 32>(n, a, b);
}
template <typename T>
T vdot(int64_t n, const T* a, const T* b) {
  return cpu_has_avx512() ? vdot_512<T>(n, a, b) : vdot_256<T>(n, a, b);
}

// Output plane `co` of one image and particle from its input planes `in` (plane_size apart, as
// prepared: padded, or phases), `wp` wide: the taps of row co summed over the wide grid, then the
// ow valid columns of each row copied out. `wide` holds oh * wp values, `src` is scratch.
template <typename T>
void output_plane(const ShiftTaps& taps, const int64_t* rp, int64_t co, const T* v, T init,
                  const T* in, int64_t plane_size, int64_t wp, const ConvGeometry& g,
                  std::vector<const T*>& src, T* wide, T* out) {
  src.clear();
  for (int64_t e = rp[co]; e < rp[co + 1]; ++e)
    src.push_back(in + taps.channel[e] * plane_size + taps.offset[e]);
  gather_taps<T>((g.oh - 1) * wp + g.ow, rp[co + 1] - rp[co], v + rp[co], src.data(), init, wide);
  for (int64_t oy = 0; oy < g.oh; ++oy) std::copy_n(wide + oy * wp, g.ow, out + oy * g.ow);
}

// The particles of a stacked convolution (groups = particles, one structure): particle n reads
// input channels [n * in, (n + 1) * in), writes output channels [n * out, (n + 1) * out) and has
// its values at [n * nnz, (n + 1) * nnz).
at::Tensor shift_forward(const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values,
                         const at::Tensor& bias, const at::Tensor& xp) {
  // planes per image: `in` (stride 1) or their phases; the output grid is as wide as a plane
  const int64_t B = xp.size(0), hp = xp.size(2), wp = xp.size(3), N = g.particles;
  const int64_t in_planes = g.in * g.stride_h * g.stride_w;
  const ShiftTaps taps = shift_taps(s, g, wp);
  at::Tensor y = at::empty({B, N * g.out, g.oh, g.ow}, xp.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "sparse_conv_forward", [&] {
    const scalar_t* xv = xp.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    const scalar_t* bv = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yv = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * N * g.out, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> src;
      std::vector<scalar_t> wide(static_cast<size_t>(g.oh * wp));  // one plane, in cache
      for (int64_t i = begin; i < end; ++i) {                      // i = (b * N + n) * out + co
        const int64_t n = i / g.out % N, co = i % g.out;
        output_plane<scalar_t>(taps, rp, co, v + n * s.nnz, bv ? bv[n * g.out + co] : scalar_t(0),
                               xv + (i / g.out) * in_planes * hp * wp, hp * wp, wp, g, src,
                               wide.data(), yv + i * g.oh * g.ow);
      }
    });
  });
  return y;
}

// Inference with a batch of at least one image per thread: a block of images per task, their
// planes padded (or split into phases) into a buffer of the task's that stays in cache while
// every output plane is computed from it, no padded copy of the whole batch. In the buffer each
// input plane of the block's images follows the previous image's, so one pass of the taps covers
// the whole block: small planes (a 14 x 14 map) make long vector loops. The rows of the wide
// grid past an image's last output row read into the next image and are discarded.
at::Tensor infer_by_image(const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values,
                          const at::Tensor& bias, const at::Tensor& x) {
  const at::Tensor xc = x.contiguous();
  const PhaseGrid q = phase_grid(g);
  const int64_t B = x.size(0), ss = g.stride_h * g.stride_w, plane = q.per_channel();
  const int64_t per_image = g.in * ss * plane;
  // images a block: their planes within 256 KiB of floats, at least 1, at most B / threads
  const int64_t fit = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(per_image, 1));
  const int64_t nb = std::min(fit, std::max<int64_t>(1, B / at::get_num_threads()));
  const int64_t blocks = (B + nb - 1) / nb;
  const ShiftTaps taps = shift_taps(s, g, q.wq);
  at::Tensor y = at::empty({B, g.out, g.oh, g.ow}, x.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv_infer", [&] {
    const scalar_t* xv = xc.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    const scalar_t* bv = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yv = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> src;
      // [in * ss planes][nb images][plane]
      std::vector<scalar_t> buf(static_cast<size_t>(nb * per_image));
      std::vector<scalar_t> wide(static_cast<size_t>(nb * plane));
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t b0 = blk * nb, n = std::min(nb, B - b0);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t c = 0; c < g.in; ++c)
            phase_plane(xv + ((b0 + j) * g.in + c) * g.h * g.w,
                        buf.data() + (c * ss * nb + j) * plane, g, q, nb * plane);
        const int64_t L = (n - 1) * plane + (g.oh - 1) * q.wq + g.ow;
        for (int64_t co = 0; co < g.out; ++co) {
          src.clear();
          for (int64_t e = rp[co]; e < rp[co + 1]; ++e)
            src.push_back(buf.data() + taps.channel[e] * nb * plane + taps.offset[e]);
          gather_taps<scalar_t>(L, rp[co + 1] - rp[co], v + rp[co], src.data(),
                                bv ? bv[co] : scalar_t(0), wide.data());
          for (int64_t j = 0; j < n; ++j) {
            scalar_t* out = yv + ((b0 + j) * g.out + co) * g.oh * g.ow;
            for (int64_t oy = 0; oy < g.oh; ++oy)
              std::copy_n(wide.data() + j * plane + oy * q.wq, g.ow, out + oy * g.ow);
          }
        }
      }
    });
  });
  return y;
}

// gy on the output grid as wide as the padded input (zeros in the extra columns), each plane
// with `front` zeros before it and kh rows of zeros after: [B, N * out, span].
struct WideGrad {
  at::Tensor t;
  int64_t wp = 0, front = 0, span = 0;
};
WideGrad wide_grad(const at::Tensor& gy, const ConvGeometry& g) {
  WideGrad w;
  w.wp = g.w + 2 * g.pad_w;
  w.front = g.kh * w.wp;
  w.span = w.front + g.oh * w.wp + g.kh * w.wp;
  const int64_t planes = gy.size(0) * gy.size(1);
  w.t = at::empty({gy.size(0), gy.size(1), w.span}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "sparse_conv_wide_grad", [&] {
    const scalar_t* src = gy.const_data_ptr<scalar_t>();
    scalar_t* dst = w.t.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* d = dst + i * w.span;
        std::fill_n(d, w.front, scalar_t(0));
        for (int64_t y = 0; y < g.oh; ++y)
          copy_then_zero(src + (i * g.oh + y) * g.ow, g.ow, d + w.front + y * w.wp, w.wp);
        std::fill(d + w.front + g.oh * w.wp, d + w.span, scalar_t(0));
      }
    });
  });
  return w;
}

// The input gradient as a gather: padded input position q receives w * gy[q - offset] from every
// nonzero whose tap reads it (the wide, front-padded gy never leaves its plane's buffer).
at::Tensor shift_input_grad(const SparseStructure& s, const ConvGeometry& g,
                            const at::Tensor& values, const WideGrad& gw) {
  const int64_t hp = g.h + 2 * g.pad_h, wp = gw.wp, N = g.particles;
  const int64_t B = gw.t.size(0), kk = g.kh * g.kw;
  at::Tensor dx = at::empty({B, N * g.in, g.h, g.w}, gw.t.options());
  const int64_t* cp = s.col_ptr.const_data_ptr<int64_t>();
  const int64_t* crow = s.csc_row.const_data_ptr<int64_t>();
  const int64_t* cpos = s.csc_pos.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(gw.t.scalar_type(), "sparse_conv_input_grad", [&] {
    const scalar_t* gv = gw.t.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    scalar_t* dv = dx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * N * g.in, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> src;
      std::vector<scalar_t> w, plane(static_cast<size_t>(hp * wp));
      for (int64_t i = begin; i < end; ++i) {  // i = (b * N + n) * in + ci
        const int64_t n = i / g.in % N, ci = i % g.in;
        const scalar_t* gp = gv + (i / g.in) * g.out * gw.span + gw.front;  // (b, n)'s planes
        src.clear();
        w.clear();
        for (int64_t c = ci * kk; c < (ci + 1) * kk; ++c) {
          const int64_t off = (c % kk) / g.kw * wp + c % g.kw;
          for (int64_t e = cp[c]; e < cp[c + 1]; ++e) {
            w.push_back(v[n * s.nnz + cpos[e]]);
            src.push_back(gp + crow[e] * gw.span - off);
          }
        }
        gather_taps<scalar_t>(hp * wp, static_cast<int64_t>(w.size()), w.data(), src.data(),
                              scalar_t(0), plane.data());
        scalar_t* out = dv + i * g.h * g.w;  // the unpadded interior
        for (int64_t y = 0; y < g.h; ++y)
          std::copy_n(plane.data() + (y + g.pad_h) * wp + g.pad_w, g.w, out + y * g.w);
      }
    });
  });
  return dx;
}

at::Tensor shift_weight_grad(const SparseStructure& s, const ConvGeometry& g, const WideGrad& wg,
                             const at::Tensor& xp) {
  const int64_t B = xp.size(0), hp = xp.size(2), wp = xp.size(3), N = g.particles;
  const int64_t L = g.oh * wp - (g.kw - 1);
  const at::Tensor& gw = wg.t;
  const ShiftTaps taps = shift_taps(s, g, wp);
  at::Tensor dw = at::zeros({N * s.nnz}, xp.options());
  const int64_t* rp = s.row_ptr.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "sparse_conv_weight_grad", [&] {
    const scalar_t* gv = gw.const_data_ptr<scalar_t>() + wg.front;
    const scalar_t* xv = xp.const_data_ptr<scalar_t>();
    scalar_t* dv = dw.mutable_data_ptr<scalar_t>();
    // one output channel of one particle per task, its nonzeros' sums over the batch in batch
    // order
    at::parallel_for(0, N * g.out, 1, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {  // j = n * out + co
        const int64_t n = j / g.out, co = j % g.out;
        scalar_t* out = dv + n * s.nnz;
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t* go = gv + (b * N * g.out + j) * wg.span;
          const scalar_t* in = xv + (b * N + n) * g.in * hp * wp;
          for (int64_t e = rp[co]; e < rp[co + 1]; ++e)
            out[e] += vdot<scalar_t>(L, go, in + taps.channel[e] * hp * wp + taps.offset[e]);
        }
      }
    });
  });
  return dw;
}

}  // namespace

at::Tensor sparse_conv_prepare(const at::Tensor& x, const ConvGeometry& g) {
  TORCH_CHECK(g.stride_h >= 1 && g.stride_w >= 1, "sparse conv: strides must be >= 1");
  // stride 1: the one phase is the zero-padded plane (none to add: the input itself)
  if (g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0) return x.contiguous();
  return phases(x, g);
}

at::Tensor sparse_conv_forward(const SparseStructure& s, const ConvGeometry& g,
                               const at::Tensor& values, const at::Tensor& bias,
                               const at::Tensor& prepared) {
  check(s, g, values);
  return shift_forward(s, g, values, bias, prepared);
}

at::Tensor sparse_conv_infer(const SparseStructure& s, const ConvGeometry& g,
                             const at::Tensor& values, const at::Tensor& bias,
                             const at::Tensor& x) {
  check(s, g, values);
  TORCH_CHECK(g.particles == 1, "sparse conv inference: one particle");
  if (x.size(0) >= at::get_num_threads()) return infer_by_image(s, g, values, bias, x);
  return shift_forward(s, g, values, bias, sparse_conv_prepare(x, g));
}

std::pair<at::Tensor, at::Tensor> sparse_conv_backward(
    const SparseStructure& s, const ConvGeometry& g, const at::Tensor& values, const at::Tensor& gy,
    const at::Tensor& prepared, bool input_grad, bool weight_grad) {
  check(s, g, values);
  TORCH_CHECK(g.stride_h == 1 && g.stride_w == 1, "sparse conv backward: stride 1 only");
  at::Tensor dx, dw;
  const WideGrad wg = wide_grad(gy.contiguous(), g);
  if (input_grad) dx = shift_input_grad(s, g, values, wg);
  if (weight_grad) dw = shift_weight_grad(s, g, wg, prepared);
  return {dx, dw};
}

}  // namespace swamp::layers
