// swamp::layers::Conv2d: torch's Conv2d with sparse mode on direct sparse kernels (see
// swamp/layers.h and conv_kernels.h).
#include <ATen/Functions.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include "conv_kernels.h"
#include "saved_structure.h"
#include "sparse_kernels.h"
#include "swamp/layers.h"

namespace swamp::layers {
namespace {

struct SparseConvFunction : public torch::autograd::Function<SparseConvFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& values, const at::Tensor& bias,
                            const std::shared_ptr<SparseStructure>& s, const ConvGeometry& g) {
    // `bias` is an empty tensor for bias-free convolutions
    const bool has_bias = bias.numel() > 0;
    const at::Tensor xp = sparse_conv_prepare(x, g);
    ctx->save_for_backward({xp, values});
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["geometry"] =
        std::vector<int64_t>{g.particles, g.in,    g.out, g.kh, g.kw, g.stride_h, g.stride_w,
                             g.pad_h,     g.pad_w, g.h,   g.w,  g.oh, g.ow};
    save_structure(ctx, *s);
    return sparse_conv_forward(*s, g, values, has_bias ? bias : at::Tensor(), xp);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &values = saved[1];
    const SparseStructure s = saved_structure(ctx);
    const auto v = ctx->saved_data["geometry"].toIntVector();
    const ConvGeometry g{v[0], v[1], v[2], v[3],  v[4],  v[5], v[6],
                         v[7], v[8], v[9], v[10], v[11], v[12]};
    const at::Tensor gy = grads[0].contiguous();
    auto [dx, dv] = sparse_conv_backward(s, g, values, gy, x, ctx->needs_input_grad(0),
                                         ctx->needs_input_grad(1));
    at::Tensor db;
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) db = gy.sum({0, 2, 3});
    return {dx, dv, db, at::Tensor(), at::Tensor()};
  }
};

// Whether the direct kernels beat the dense ones on this shape (benchmarks/sparse_step.py --conv):
// stride 1 over planes of at least 256 output positions (as wide as the padded input); smaller
// planes leave the vector loops mostly in their tails (VGG's 4x4 and 2x2 planes: 25x slower).
bool direct_pays(const ConvGeometry& g) {
  return g.stride_h == 1 && g.stride_w == 1 && g.oh * (g.w + 2 * g.pad_w) >= 256;
}

thread_local bool tls_channels_last = false;

}  // namespace

bool channels_last_enabled() { return tls_channels_last; }

ChannelsLastGuard::ChannelsLastGuard(bool on) : previous_(tls_channels_last) {
  tls_channels_last = on;
}

ChannelsLastGuard::~ChannelsLastGuard() { tls_channels_last = previous_; }

at::Tensor channels_last_if_enabled(const at::Tensor& t) {
  if (!tls_channels_last || !t.defined() || t.dim() != 4) return t;
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

Conv2dImpl::Conv2dImpl(const torch::nn::Conv2dOptions& options, int64_t particles)
    : torch::nn::Conv2dImpl(options), particles_(particles) {
  TORCH_CHECK_VALUE(particles >= 1 && options.groups() % particles == 0,
                    "Conv2d: particles must be >= 1 and divide the groups (", options.groups(),
                    "), got ", particles);
}

bool Conv2dImpl::sparse_capable() const {
  const auto& o = options;
  const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding());
  return o.groups() == particles_ && (*o.dilation())[0] == 1 && (*o.dilation())[1] == 1 &&
         pad != nullptr && std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()) &&
         !o.transposed() && weight.device().is_cpu() && weight.is_floating_point();
}

void Conv2dImpl::set_sparse(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(sparse_capable(),
                    "Conv2d: sparse mode needs one group per particle, no dilation, zero "
                    "padding and CPU tensors");
  const std::vector<int64_t> one{weight.size(0) / particles_, weight.size(1), weight.size(2),
                                 weight.size(3)};
  TORCH_CHECK_VALUE(mask.sizes() == at::IntArrayRef(one), "Conv2d: sparse mask must be ", one,
                    ", got ", mask.sizes());
  enter_sparse(mask.reshape({one[0], -1}), particles_);
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  // dense: torch's Conv2d forward, on NHWC copies inside a channels-last scope
  if (!sparse_) return _conv_forward(channels_last_if_enabled(x), channels_last_if_enabled(weight));
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == weight.size(1) * particles_,
                    "Conv2d: expected input [B, ", weight.size(1) * particles_, ", H, W], got ",
                    x.sizes());
  const auto& o = options;
  const auto& pad = std::get<torch::ExpandingArray<2>>(o.padding());
  ConvGeometry g;
  g.particles = particles_;
  g.in = weight.size(1);
  g.out = weight.size(0) / particles_;
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
  if (direct_pays(g)) {  // the sparse kernels compute in float32, also under autocast
    const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const bool low = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
    return SparseConvFunction::apply(low ? x.to(at::kFloat) : x, values_,
                                     bias.defined() ? bias : values_.new_empty({0}), sparse_, g);
  }
  // Small planes or strides: the dense kernels on the values scattered into the weight (the
  // weight gradient comes back at the nonzeros only, through the scatter).
  return _conv_forward(channels_last_if_enabled(x), channels_last_if_enabled(scattered(values_)));
}

}  // namespace swamp::layers
