// The linear layer's own autograd functions: sparse values x dense activations, and dense stacked
// particles on particle-major activations.
#include "linear_autograd.h"

#include <torch/autograd.h>

#include "saved_structure.h"
#include "sparse_kernels.h"

namespace swamp::layers {
namespace {

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
    save_structure(ctx, *s);
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
    const SparseStructure st = saved_structure(ctx);
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
    at::Tensor y = bias.defined() ? at::baddbmm(bias.view({N, 1, out}), x, w3.transpose(1, 2))
                                  : at::bmm(x, w3.transpose(1, 2));
    // under autocast the product ran in a lower precision: the backward runs in it too
    ctx->saved_data["dtype"] = static_cast<int64_t>(y.scalar_type());
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const at::Tensor x = saved[0].to(dt), weight = saved[1].to(dt);  // no-ops in fp32
    const int64_t N = ctx->saved_data["particles"].toInt(), in = x.size(2);
    const int64_t out = weight.size(0) / N;
    const at::Tensor g = grads[0].to(dt).contiguous();  // [N, B, out]
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) dx = at::bmm(g, weight.view({N, out, in}));
    if (ctx->needs_input_grad(1)) dw = at::bmm(g.transpose(1, 2), x).view({N * out, in});
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2))
      db = g.sum(1).view({N * out});
    return {dx, dw, db, at::Tensor()};
  }
};

}  // namespace

at::Tensor sparse_linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& bias,
                         const std::shared_ptr<SparseStructure>& s, int64_t particles) {
  return SparseLinearFunction::apply(x, values, bias, s, particles);
}

at::Tensor stacked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          int64_t particles) {
  return StackedLinearFunction::apply(x, weight, bias, particles);
}

}  // namespace swamp::layers
