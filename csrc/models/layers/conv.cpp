// swamp::layers::Conv2d: torch's Conv2d with sparse mode on direct sparse kernels (see
// swamp/layers.h and conv_kernels.h).
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include "conv_kernels.h"
#include "swamp/layers.h"

namespace swamp::layers {
namespace {

struct SparseConvFunction : public torch::autograd::Function<SparseConvFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& values, const at::Tensor& bias,
                            const std::shared_ptr<SparseStructure>& s, const ConvGeometry& g) {
    // `bias` is an empty tensor for bias-free convolutions
    const bool has_bias = bias.numel() > 0;
    const at::Tensor xc = x.contiguous();
    ctx->save_for_backward({xc, values});
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["geometry"] =
        std::vector<int64_t>{g.in,       g.out,      g.kh,    g.kw, g.stride_h, g.stride_w,
                             g.pad_h,    g.pad_w,    g.h,     g.w,  g.oh,       g.ow};
    ctx->saved_data["shape"] = std::vector<int64_t>{s->out, s->in, s->nnz};
    ctx->saved_data["row_ptr"] = s->row_ptr;
    ctx->saved_data["col"] = s->col;
    ctx->saved_data["col_ptr"] = s->col_ptr;
    ctx->saved_data["csc_row"] = s->csc_row;
    ctx->saved_data["csc_pos"] = s->csc_pos;
    return sparse_conv_forward(*s, g, values, has_bias ? bias : at::Tensor(), xc);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &values = saved[1];
    SparseStructure s;
    const auto shape = ctx->saved_data["shape"].toIntVector();
    s.out = shape[0];
    s.in = shape[1];
    s.nnz = shape[2];
    s.row_ptr = ctx->saved_data["row_ptr"].toTensor();
    s.col = ctx->saved_data["col"].toTensor();
    s.col_ptr = ctx->saved_data["col_ptr"].toTensor();
    s.csc_row = ctx->saved_data["csc_row"].toTensor();
    s.csc_pos = ctx->saved_data["csc_pos"].toTensor();
    const auto v = ctx->saved_data["geometry"].toIntVector();
    const ConvGeometry g{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]};
    const at::Tensor gy = grads[0].contiguous();
    at::Tensor dx, dv, db;
    if (ctx->needs_input_grad(0)) dx = sparse_conv_input_grad(s, g, values, gy);
    if (ctx->needs_input_grad(1)) dv = sparse_conv_weight_grad(s, g, gy, x);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) db = gy.sum({0, 2, 3});
    return {dx, dv, db, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

Conv2dImpl::Conv2dImpl(const torch::nn::Conv2dOptions& options)
    : torch::nn::Conv2dImpl(options) {}

bool Conv2dImpl::sparse_capable() const {
  const auto& o = options;
  const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding());
  return o.groups() == 1 && (*o.dilation())[0] == 1 && (*o.dilation())[1] == 1 &&
         pad != nullptr && std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()) &&
         !o.transposed() && weight.device().is_cpu() && weight.is_floating_point();
}

void Conv2dImpl::set_sparse(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(sparse_capable(), "Conv2d: sparse mode needs one group, no dilation, zero "
                    "padding and CPU tensors");
  TORCH_CHECK_VALUE(mask.sizes() == weight.sizes(), "Conv2d: sparse mask must be ",
                    weight.sizes(), ", got ", mask.sizes());
  enter_sparse(mask.reshape({weight.size(0), -1}), 1);
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  if (!sparse_) return torch::nn::Conv2dImpl::forward(x);
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == weight.size(1), "Conv2d: expected input [B, ",
                    weight.size(1), ", H, W], got ", x.sizes());
  const auto& o = options;
  const auto& pad = std::get<torch::ExpandingArray<2>>(o.padding());
  ConvGeometry g;
  g.in = weight.size(1);
  g.out = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.stride_h = (*o.stride())[0];
  g.stride_w = (*o.stride())[1];
  g.pad_h = (*pad)[0];
  g.pad_w = (*pad)[1];
  g.h = x.size(2);
  g.w = x.size(3);
  g.oh = (g.h + 2 * g.pad_h - g.kh) / g.stride_h + 1;
  g.ow = (g.w + 2 * g.pad_w - g.kw) / g.stride_w + 1;
  TORCH_CHECK_VALUE(g.oh > 0 && g.ow > 0, "Conv2d: input ", x.sizes(), " is smaller than the ",
                    g.kh, "x", g.kw, " kernel");
  return SparseConvFunction::apply(x, values_, bias.defined() ? bias : values_.new_empty({0}),
                                   sparse_, g);
}

}  // namespace swamp::layers
