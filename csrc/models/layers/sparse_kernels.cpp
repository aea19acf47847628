// Sparse x dense products for pruned linear layers (see sparse_kernels.h): plain loops over
// contiguous rows (SWAMP_TARGET_CLONES: also an AVX2 build).
#include "sparse_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "vec.h"

namespace swamp::layers {

std::shared_ptr<SparseStructure> build_structure(const at::Tensor& mask) {
  auto s = std::make_shared<SparseStructure>();
  const at::Tensor m = mask.to(at::kCPU, at::kBool).contiguous();
  s->out = m.size(0);
  s->in = m.size(1);
  const bool* mp = m.const_data_ptr<bool>();
  std::vector<int64_t> row_ptr(s->out + 1, 0), col, col_count(s->in + 1, 0);
  for (int64_t o = 0; o < s->out; ++o) {
    for (int64_t k = 0; k < s->in; ++k)
      if (mp[o * s->in + k]) {
        col.push_back(k);
        ++col_count[k + 1];
      }
    row_ptr[o + 1] = static_cast<int64_t>(col.size());
  }
  s->nnz = static_cast<int64_t>(col.size());
  std::vector<int64_t> col_ptr(col_count);
  for (int64_t k = 0; k < s->in; ++k) col_ptr[k + 1] += col_ptr[k];
  std::vector<int64_t> fill(col_ptr.begin(), col_ptr.end() - 1), csc_row(s->nnz), csc_pos(s->nnz),
      positions(s->nnz);
  for (int64_t o = 0; o < s->out; ++o)
    for (int64_t e = row_ptr[o]; e < row_ptr[o + 1]; ++e) {
      const int64_t k = col[e];
      csc_row[fill[k]] = o;
      csc_pos[fill[k]++] = e;
      positions[e] = o * s->in + k;
    }
  auto t = [](const std::vector<int64_t>& v) {
    return at::tensor(at::ArrayRef<int64_t>(v), at::kLong);
  };
  s->row_ptr = t(row_ptr);
  s->col = t(col);
  s->col_ptr = t(col_ptr);
  s->csc_row = t(csc_row);
  s->csc_pos = t(csc_pos);
  s->positions = t(positions);
  return s;
}

// The kernels accumulate 4 vectors of 32 bytes (32 floats) of the batch at a time in registers,
// written with GCC/Clang vector extensions (AVX2 in the x86-64-v3 clone, SSE pairs otherwise).
// out[r, :] = init[r] + sum_e vals[e] * in[idx[e], :] over the entries e of row r
// (forward: rows of the CSR, input gradient: columns of the CSC).
template <typename T, typename I = int64_t>
SWAMP_TARGET_CLONES void gather_rows(int64_t begin, int64_t end, int64_t rows_per_particle,
                                     int64_t in_rows_per_particle, int64_t nnz, int64_t B,
                                     const I* ptr, const I* idx, const int64_t* pos, const T* vals,
                                     const T* in, const T* init, T* out) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::lanes;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t p = r / rows_per_particle, o = r % rows_per_particle;
    const T* vp = vals + p * nnz;
    const T* ip = in + p * in_rows_per_particle * B;
    const T b0 = init ? init[r] : T(0);
    T* orow = out + r * B;
    int64_t c = 0;
    for (; c + 4 * L <= B; c += 4 * L) {
      V a0 = {};
      a0 += b0;
      V a1 = a0, a2 = a0, a3 = a0;
      for (int64_t e = ptr[o]; e < ptr[o + 1]; ++e) {
        const T v = vp[pos ? pos[e] : e];
        const T* x = ip + idx[e] * B + c;
        a0 += v * Vec<T>::load(x);
        a1 += v * Vec<T>::load(x + L);
        a2 += v * Vec<T>::load(x + 2 * L);
        a3 += v * Vec<T>::load(x + 3 * L);
      }
      Vec<T>::store(orow + c, a0);
      Vec<T>::store(orow + c + L, a1);
      Vec<T>::store(orow + c + 2 * L, a2);
      Vec<T>::store(orow + c + 3 * L, a3);
    }
    for (; c < B; ++c) {
      T acc = b0;
      for (int64_t e = ptr[o]; e < ptr[o + 1]; ++e)
        acc += vp[pos ? pos[e] : e] * ip[idx[e] * B + c];
      orow[c] = acc;
    }
  }
}

// d[e] = <g[row(e), :], x[col(e), :]> for the CSR entries of rows [begin, end).
template <typename T>
SWAMP_TARGET_CLONES void sampled_dots(int64_t begin, int64_t end, int64_t out, int64_t in,
                                      int64_t nnz, int64_t B, const int64_t* ptr,
                                      const int64_t* col, const T* g, const T* x, T* d) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::lanes;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t p = r / out, o = r % out;
    const T* gr = g + r * B;
    const T* xp = x + p * in * B;
    T* dp = d + p * nnz;
    for (int64_t e = ptr[o]; e < ptr[o + 1]; ++e) {
      const T* xr = xp + col[e] * B;
      V a0 = {}, a1 = {}, a2 = {}, a3 = {};
      int64_t c = 0;
      for (; c + 4 * L <= B; c += 4 * L) {
        a0 += Vec<T>::load(gr + c) * Vec<T>::load(xr + c);
        a1 += Vec<T>::load(gr + c + L) * Vec<T>::load(xr + c + L);
        a2 += Vec<T>::load(gr + c + 2 * L) * Vec<T>::load(xr + c + 2 * L);
        a3 += Vec<T>::load(gr + c + 3 * L) * Vec<T>::load(xr + c + 3 * L);
      }
      const V a = (a0 + a1) + (a2 + a3);
      T sum = 0;
      for (int64_t j = 0; j < L; ++j) sum += a[j];
      for (; c < B; ++c) sum += gr[c] * xr[c];
      dp[e] = sum;
    }
  }
}

// y = yT^T with yT[p*out + o, :] = bias + sum over row o of values * xT[p*in + col, :]
at::Tensor spmm_rows(const SparseStructure& s, int64_t particles, const at::Tensor& values,
                     const at::Tensor& bias, const at::Tensor& xT) {
  const int64_t B = xT.size(1);
  // [B, N*out] with the batch contiguous: the memory of a [N*out, B] matrix, but not a view (so
  // that in-place activations on it stay cheap for autograd).
  at::Tensor y = at::empty_strided({B, particles * s.out}, {1, B}, xT.options());
  at::Tensor yT = y.t();
  AT_DISPATCH_FLOATING_TYPES(xT.scalar_type(), "swamp_sparse_linear_forward", [&] {
    const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, particles * s.out, 4, [&](int64_t begin, int64_t end) {
      gather_rows<scalar_t>(begin, end, s.out, s.in, s.nnz, B, s.row_ptr.const_data_ptr<int64_t>(),
                            s.col.const_data_ptr<int64_t>(), nullptr,
                            values.const_data_ptr<scalar_t>(), xT.const_data_ptr<scalar_t>(), bp,
                            yT.mutable_data_ptr<scalar_t>());
    });
  });
  return y;
}

at::Tensor spmm_csr(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
                    const at::Tensor& bias, const at::Tensor& xT) {
  const int64_t B = xT.size(1), out = crow.numel() - 1, in = xT.size(0), nnz = values.numel();
  at::Tensor y = at::empty_strided({B, out}, {1, B}, xT.options());
  at::Tensor yT = y.t();
  // threads only where each has work worth waking it for: waking the pool costs tens of
  // microseconds, as much as a product of a few hundred thousand multiply-adds
  const int64_t per_row = std::max<int64_t>(1, (nnz / std::max<int64_t>(out, 1) + 1) * B);
  const int64_t grain = std::max<int64_t>(4, (int64_t{1} << 18) / per_row);
  AT_DISPATCH_FLOATING_TYPES(xT.scalar_type(), "swamp_sparse_linear", [&] {
    const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto* ptr, auto* idx) {
      at::parallel_for(0, out, grain, [&](int64_t begin, int64_t end) {
        gather_rows<scalar_t>(begin, end, out, in, nnz, B, ptr, idx, nullptr,
                              values.const_data_ptr<scalar_t>(), xT.const_data_ptr<scalar_t>(), bp,
                              yT.mutable_data_ptr<scalar_t>());
      });
    };
    if (crow.scalar_type() == at::kInt)
      run(crow.const_data_ptr<int32_t>(), col.const_data_ptr<int32_t>());
    else
      run(crow.const_data_ptr<int64_t>(), col.const_data_ptr<int64_t>());
  });
  return y;
}

// dxT[p*in + k, :] = sum over column k of values * gT[p*out + row, :]
at::Tensor spmm_cols(const SparseStructure& s, int64_t particles, const at::Tensor& values,
                     const at::Tensor& gT) {
  const int64_t B = gT.size(1);
  at::Tensor dxT = at::empty({particles * s.in, B}, gT.options());
  AT_DISPATCH_FLOATING_TYPES(gT.scalar_type(), "swamp_sparse_linear_input_grad", [&] {
    at::parallel_for(0, particles * s.in, 8, [&](int64_t begin, int64_t end) {
      gather_rows<scalar_t>(begin, end, s.in, s.out, s.nnz, B, s.col_ptr.const_data_ptr<int64_t>(),
                            s.csc_row.const_data_ptr<int64_t>(),
                            s.csc_pos.const_data_ptr<int64_t>(), values.const_data_ptr<scalar_t>(),
                            gT.const_data_ptr<scalar_t>(), nullptr,
                            dxT.mutable_data_ptr<scalar_t>());
    });
  });
  return dxT;
}

// dvalues[p*nnz + e] = <gT[p*out + row(e), :], xT[p*in + col(e), :]> (the weight gradient at the
// nonzeros only: a sampled dense x dense product)
at::Tensor sddmm(const SparseStructure& s, int64_t particles, const at::Tensor& gT,
                 const at::Tensor& xT) {
  const int64_t B = gT.size(1);
  at::Tensor dv = at::empty({particles * s.nnz}, gT.options());
  AT_DISPATCH_FLOATING_TYPES(gT.scalar_type(), "swamp_sparse_linear_weight_grad", [&] {
    at::parallel_for(0, particles * s.out, 4, [&](int64_t begin, int64_t end) {
      sampled_dots<scalar_t>(begin, end, s.out, s.in, s.nnz, B, s.row_ptr.const_data_ptr<int64_t>(),
                             s.col.const_data_ptr<int64_t>(), gT.const_data_ptr<scalar_t>(),
                             xT.const_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>());
    });
  });
  return dv;
}

// [R, C] -> contiguous [C, R] in 32 x 32 tiles (ATen's generic strided copy is several times
// slower for this shape of problem).
template <typename T>
SWAMP_TARGET_CLONES void transpose_tiles(int64_t rb_begin, int64_t rb_end, int64_t R, int64_t C,
                                         const T* in, T* out) {
  constexpr int64_t K = 32;
  for (int64_t rb = rb_begin; rb < rb_end; ++rb) {
    const int64_t r0 = rb * K, r1 = std::min(R, r0 + K);
    for (int64_t c0 = 0; c0 < C; c0 += K) {
      const int64_t c1 = std::min(C, c0 + K);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * R + r] = in[r * C + c];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SWAMP_HAVE_AVX2_TRANSPOSE 1
// The 8 x 8 float block at `in` (rows ldi apart) transposed into `out` (rows ldo apart), in
// registers: unpack pairs of rows, shuffle pairs of pairs, swap 128-bit halves.
__attribute__((target("avx2"))) inline void transpose8x8(const float* in, int64_t ldi, float* out,
                                                         int64_t ldo) {
  __m256 r[8], t[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(in + k * ldi);
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    r[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(out + k * ldo, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
    _mm256_storeu_ps(out + (k + 4) * ldo, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
  }
}

// transpose_tiles for floats on 8 x 8 register blocks (AVX2), the edges element by element.
__attribute__((target("avx2"))) void transpose_tiles_avx2(int64_t rb_begin, int64_t rb_end,
                                                          int64_t R, int64_t C, const float* in,
                                                          float* out) {
  constexpr int64_t K = 32;
  for (int64_t rb = rb_begin; rb < rb_end; ++rb) {
    const int64_t r0 = rb * K, r1 = std::min(R, r0 + K);
    for (int64_t c0 = 0; c0 < C; c0 += K) {
      const int64_t c1 = std::min(C, c0 + K);
      int64_t r = r0;
      for (; r + 8 <= r1; r += 8) {
        int64_t c = c0;
        for (; c + 8 <= c1; c += 8) transpose8x8(in + r * C + c, C, out + c * R + r, R);
        for (; c < c1; ++c)
          for (int64_t k = 0; k < 8; ++k) out[c * R + r + k] = in[(r + k) * C + c];
      }
      for (; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[c * R + r] = in[r * C + c];
    }
  }
}
#endif

// Row blocks [b0, b1) of transpose_tiles: floats on AVX2 register blocks where the CPU has them.
inline void transpose_rows(int64_t b0, int64_t b1, int64_t R, int64_t C, const float* in,
                           float* out) {
#ifdef SWAMP_HAVE_AVX2_TRANSPOSE
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return transpose_tiles_avx2(b0, b1, R, C, in, out);
#endif
  transpose_tiles<float>(b0, b1, R, C, in, out);
}
inline void transpose_rows(int64_t b0, int64_t b1, int64_t R, int64_t C, const double* in,
                           double* out) {
  transpose_tiles<double>(b0, b1, R, C, in, out);
}

// Rows of a [B, F] tensor as a contiguous [F, B] (of each [B, F] matrix of an [N, B, F] tensor:
// [N, F, B]): free when x already has the batch contiguous (the output of a sparse layer), a
// tiled transpose otherwise.
at::Tensor transposed(const at::Tensor& x) {
  const at::Tensor xt = x.transpose(-1, -2);
  if (xt.is_contiguous()) return xt;
  const at::Tensor c = x.contiguous();
  const int64_t N = c.dim() == 3 ? c.size(0) : 1, R = c.size(-2), C = c.size(-1);
  const int64_t blocks = (R + 31) / 32;
  at::Tensor out = at::empty_like(xt, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "swamp_transpose", [&] {
    const scalar_t* in = c.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    // one task below a million elements (waking the threads would cost more than they save)
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(32 * C, 1));
    at::parallel_for(0, N * blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {  // runs of row blocks within one matrix
        const int64_t n = i / blocks, b0 = i % blocks, b1 = std::min(blocks, b0 + (end - i));
        transpose_rows(b0, b1, R, C, in + n * R * C, o + n * R * C);
        i += b1 - b0;
      }
    });
  });
  return out;
}

}  // namespace swamp::layers
