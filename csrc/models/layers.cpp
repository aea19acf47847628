// Stacked layers and the sparse linear kernels (see swamp/layers.h).
#include "swamp/layers.h"

#include <ATen/Dispatch.h>
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstring>
#include <vector>

// The kernels below are plain loops over contiguous rows (SWAMP_TARGET_CLONES: also an AVX2 build).
#include "../common/simd.h"

namespace swamp::layers {

// CSR (row-major nonzeros of the mask) and CSC views of one mask. Values live in CSR order.
struct SparseStructure {
  int64_t out = 0, in = 0, nnz = 0;
  at::Tensor row_ptr;  // [out + 1]
  at::Tensor col;      // [nnz]  column of each CSR entry
  at::Tensor col_ptr;  // [in + 1]
  at::Tensor csc_row;  // [nnz]  row of each CSC entry
  at::Tensor csc_pos;  // [nnz]  CSR position of each CSC entry
  at::Tensor
      positions;  // [nnz]  flat index row * in + col of each CSR entry (on the weight's device)
};

namespace {

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
#pragma GCC diagnostic ignored "-Wpsabi"  // vector values never cross a non-inlined call
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(T);
  static inline type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline void store(T* p, type v) { std::memcpy(p, &v, sizeof(v)); }
};

// out[r, :] = init[r] + sum_e vals[e] * in[idx[e], :] over the entries e of row r
// (forward: rows of the CSR, input gradient: columns of the CSC).
template <typename T>
SWAMP_TARGET_CLONES void gather_rows(int64_t begin, int64_t end, int64_t rows_per_particle,
                                     int64_t in_rows_per_particle, int64_t nnz, int64_t B,
                                     const int64_t* ptr, const int64_t* idx, const int64_t* pos,
                                     const T* vals, const T* in, const T* init, T* out) {
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
    at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {  // runs of row blocks within one matrix
        const int64_t n = i / blocks, b0 = i % blocks, b1 = std::min(blocks, b0 + (end - i));
        transpose_tiles<scalar_t>(b0, b1, R, C, in + n * R * C, o + n * R * C);
        i += b1 - b0;
      }
    });
  });
  return out;
}

struct SparseLinearFunction : public torch::autograd::Function<SparseLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& values, const at::Tensor& bias,
                            const std::shared_ptr<SparseStructure>& s, int64_t particles) {
    // x: [B, N*in], or particle-major [N, B, in] (then y is [N, B, out]; the layout views are
    // made here, inside the function, so that in-place ops on y cost no view bookkeeping)
    const bool pm = x.dim() == 3;
    const int64_t B = x.size(-2);
    const at::Tensor xT = pm ? transposed(x).view({-1, B}) : transposed(x);
    ctx->save_for_backward({xT, values});
    ctx->saved_data["pm"] = pm;
    ctx->saved_data["particles"] = particles;
    ctx->saved_data["has_bias"] = bias.defined();
    ctx->saved_data["shape"] = std::vector<int64_t>{s->out, s->in, s->nnz};
    ctx->saved_data["row_ptr"] = s->row_ptr;
    ctx->saved_data["col"] = s->col;
    ctx->saved_data["col_ptr"] = s->col_ptr;
    ctx->saved_data["csc_row"] = s->csc_row;
    ctx->saved_data["csc_pos"] = s->csc_pos;
    const at::Tensor y = spmm_rows(*s, particles, values, bias, xT);  // [B, N*out], (1, B)
    if (!pm) return y;
    // the same storage as [N, B, out] with strides (out*B, 1, B): a new tensor, not a view
    return at::empty({0}, y.options())
        .set_(y.storage(), y.storage_offset(), {particles, B, s->out}, {s->out * B, 1, B});
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& xT = saved[0];
    const at::Tensor& values = saved[1];
    const int64_t particles = ctx->saved_data["particles"].toInt();
    SparseStructure st;
    const auto shape = ctx->saved_data["shape"].toIntVector();
    st.out = shape[0];
    st.in = shape[1];
    st.nnz = shape[2];
    st.row_ptr = ctx->saved_data["row_ptr"].toTensor();
    st.col = ctx->saved_data["col"].toTensor();
    st.col_ptr = ctx->saved_data["col_ptr"].toTensor();
    st.csc_row = ctx->saved_data["csc_row"].toTensor();
    st.csc_pos = ctx->saved_data["csc_pos"].toTensor();
    const SparseStructure* s = &st;
    const bool pm = ctx->saved_data["pm"].toBool();
    const int64_t B = xT.size(1);
    const at::Tensor gT = pm ? transposed(grads[0]).view({-1, B}) : transposed(grads[0]);
    at::Tensor dx, dv, db;
    if (ctx->needs_input_grad(0)) {
      dx = spmm_cols(*s, particles, values, gT);  // [N*in, B]
      dx = pm ? dx.view({particles, s->in, B}).transpose(1, 2) : dx.t();
    }
    if (ctx->needs_input_grad(1)) dv = sddmm(*s, particles, gT, xT);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) db = gT.sum(1);
    return {dx, dv, db, at::Tensor(), at::Tensor()};
  }
};

// The dense stacked linear layer on particle-major activations: y[n] = x[n] w[n]^T + b[n]. Its
// own backward so that the weight gradient comes out as [N, out, in], the parameter's layout
// (autograd through a transposed view of the weight would copy it back every step).
struct StackedLinearFunction : public torch::autograd::Function<StackedLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias, int64_t particles) {
    const int64_t N = particles, in = x.size(2), out = weight.size(0) / N;
    const at::Tensor w3 = weight.view({N, out, in});
    ctx->save_for_backward({x, weight});
    ctx->saved_data["particles"] = particles;
    ctx->saved_data["has_bias"] = bias.defined();
    return bias.defined() ? at::baddbmm(bias.view({N, 1, out}), x, w3.transpose(1, 2))
                          : at::bmm(x, w3.transpose(1, 2));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1];
    const int64_t N = ctx->saved_data["particles"].toInt(), in = x.size(2);
    const int64_t out = weight.size(0) / N;
    const at::Tensor g = grads[0].contiguous();  // [N, B, out]
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) dx = at::bmm(g, weight.view({N, out, in}));
    if (ctx->needs_input_grad(1)) dw = at::bmm(g.transpose(1, 2), x).view({N * out, in});
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2))
      db = g.sum(1).view({N * out});
    return {dx, dw, db, at::Tensor()};
  }
};

}  // namespace

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
  if (sparse_) return SparseLinearFunction::apply(x, values_, bias, sparse_, particles_);
  if (pm) return StackedLinearFunction::apply(x.contiguous(), weight, bias, particles_);
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

int64_t enable_sparse(torch::nn::Module& model, const MaskMap& masks, const std::string& mode,
                      double max_density) {
  TORCH_CHECK_VALUE(mode == "off" || mode == "on" || mode == "auto",
                    "enable_sparse: mode must be off, on or auto; got '", mode, "'");
  int64_t n = 0;
  if (mode == "off") return n;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto lin = std::dynamic_pointer_cast<LinearImpl>(item.value());
    if (!lin) continue;
    auto it = masks.find(item.key() + ".weight");
    if (it == masks.end()) continue;
    const double density = it->second.to(at::kFloat).mean().item<double>();
    if (mode == "on" ? density < 1.0 : density <= max_density) {
      lin->set_sparse(it->second.to(lin->weight.device()));
      ++n;
    }
  }
  return n;
}

void disable_sparse(torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto lin = std::dynamic_pointer_cast<LinearImpl>(m)) lin->clear_sparse();
}

void sync_sparse(torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/false))
    if (auto lin = std::dynamic_pointer_cast<LinearImpl>(m))
      if (lin->is_sparse()) lin->sync_dense();
}

std::vector<at::Tensor> trainable_tensors(torch::nn::Module& model) {
  std::map<std::string, at::Tensor> values;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto lin = std::dynamic_pointer_cast<LinearImpl>(item.value()))
      if (lin->is_sparse()) values[item.key() + ".weight"] = lin->values();
  std::vector<at::Tensor> out;
  for (const auto& item : model.named_parameters(true)) {
    auto it = values.find(item.key());
    out.push_back(it == values.end() ? item.value() : it->second);
  }
  return out;
}

std::vector<at::Tensor> trainable_masks(torch::nn::Module& model, const MaskMap& masks,
                                        int64_t particles) {
  std::vector<at::Tensor> out;
  const std::vector<at::Tensor> train = trainable_tensors(model);
  size_t i = 0;
  for (const auto& item : model.named_parameters(true)) {
    auto it = masks.find(item.key());
    const bool sparse = !train[i++].is_same(item.value());
    if (it == masks.end() || sparse) {
      out.emplace_back();
    } else {
      std::vector<int64_t> reps(static_cast<size_t>(it->second.dim()), 1);
      reps[0] = particles;
      at::Tensor m = particles == 1 ? it->second : it->second.repeat(reps);
      out.push_back(m.to(item.value().device()));
    }
  }
  return out;
}

torch::nn::Conv2d conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                         int64_t particles, bool bias) {
  TORCH_CHECK_VALUE(particles >= 1, "conv2d: particles must be >= 1, got ", particles);
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in * particles, out * particles, kernel)
                               .stride(stride)
                               .padding(padding)
                               .groups(particles)
                               .bias(bias));
}

torch::nn::BatchNorm2d batchnorm(int64_t channels, int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "batchnorm: particles must be >= 1, got ", particles);
  return torch::nn::BatchNorm2d(channels * particles);
}

at::Tensor stack_inputs(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 3, "stack_inputs: expected [N, B, C, ...], got ", x.sizes());
  std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
  shape[1] *= x.size(0);
  return x.transpose(0, 1).reshape(shape);
}

at::Tensor repeat_input(const at::Tensor& x, int64_t particles) {
  if (particles == 1) return x;
  std::vector<int64_t> reps(static_cast<size_t>(x.dim()), 1);
  reps[1] = particles;
  return x.repeat(reps);
}

at::Tensor to_particle_major(const at::Tensor& x, int64_t particles) {
  if (particles == 1) return x.flatten(1);
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.size(1) % particles == 0, "to_particle_major: expected [B, ",
                    particles, "*C, ...], got ", x.sizes());
  // no copy at all when x is a particle-major tensor seen as stacked (stack_inputs of
  // single-channel images)
  return x.reshape({x.size(0), particles, -1}).transpose(0, 1).contiguous();
}

at::Tensor from_particle_major(const at::Tensor& y) {
  if (y.dim() == 2) return y;
  TORCH_CHECK_VALUE(y.dim() == 3, "from_particle_major: expected [N, B, F], got ", y.sizes());
  return y.transpose(0, 1).reshape({y.size(1), y.size(0) * y.size(2)});
}

at::Tensor split_outputs(const at::Tensor& y, int64_t particles) {
  return y.view({y.size(0), particles, -1}).transpose(0, 1);
}

at::Tensor particle_slice(const at::Tensor& t, int64_t particles, int64_t n) {
  if (t.dim() == 0 || particles == 1) return t;
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[0] /= particles;
  shape.insert(shape.begin(), particles);
  return t.view(shape).select(0, n);
}

}  // namespace swamp::layers
