// Flatness: Hutchinson's estimator of the trace of the training loss's Hessian, tr(H) = E[v^T H v]
// over Rademacher vectors v restricted to the unpruned parameters, H v by double backpropagation.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/types.h>

#include <cmath>

#include "subject.h"

namespace swamp {

HessianTrace hessian_trace(const Config& cfg, const RunParts& parts, const State& state,
                           const State& masks, const TraceOptions& opt) {
  TORCH_CHECK_VALUE(opt.min_samples >= 2 && opt.max_samples >= opt.min_samples,
                    "hessian_trace: needs 2 <= min_samples <= max_samples, got ", opt.min_samples,
                    " and ", opt.max_samples);
  TORCH_CHECK_VALUE(opt.block >= 1, "hessian_trace: block must be >= 1, got ", opt.block);
  TORCH_CHECK_VALUE(std::isfinite(opt.tolerance) && opt.tolerance >= 0.0,
                    "hessian_trace: tolerance must be >= 0, got ", opt.tolerance);
  analysis::Subject subject(cfg, parts);
  subject.load(state, "the state");
  Model& model = subject.model();
  model.train(false);
  std::vector<at::Tensor> params, keep;
  HessianTrace out;
  const auto named = model.named_parameters(true);
  for (const auto& kv : named) {
    if (!kv.value().requires_grad()) continue;
    params.push_back(kv.value());
    at::Tensor m;
    if (auto it = masks.find(kv.key()); it != masks.end()) {
      TORCH_CHECK_VALUE(
          it->second.scalar_type() == at::kBool && it->second.sizes() == kv.value().sizes(),
          "hessian_trace: the mask of '", kv.key(), "' must be bool of shape ", kv.value().sizes());
      m = it->second.to(kv.value().device(), kv.value().scalar_type());
      out.dimension += it->second.sum().item<int64_t>();
    } else {
      out.dimension += kv.value().numel();
    }
    keep.push_back(m);
  }
  for (const auto& kv : masks)
    TORCH_CHECK_VALUE(named.contains(kv.first), "hessian_trace: mask of '", kv.first,
                      "', which the model does not have");
  const int64_t n = subject.train_count(opt.train_samples);
  at::Generator gen = at::detail::createCPUGenerator(opt.seed);
  double sum = 0.0, sum2 = 0.0;
  while (out.samples < opt.max_samples) {
    const int64_t K = std::min(opt.block, opt.max_samples - out.samples);
    std::vector<std::vector<at::Tensor>> vs(K);
    for (auto& v : vs)
      for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor r = at::randint(0, 2, params[i].sizes(), gen, at::TensorOptions(at::kFloat))
                           .mul_(2)
                           .sub_(1)
                           .to(params[i].device(), params[i].scalar_type());
        v.push_back(keep[i].defined() ? r.mul_(keep[i]) : r);
      }
    std::vector<double> vhv(K, 0.0);
    subject.for_train_batches(n, [&](const Batch& b) {
      const double w = static_cast<double>(b.y.size(0)) / static_cast<double>(n);
      at::Tensor loss = (b.x.defined() ? model.training_loss(b.x, b.y, 1)
                                       : model.training_loss_inputs(b.inputs, b.y))
                            .sum() *
                        w;
      const auto grads = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true,
                                               /*create_graph=*/true, /*allow_unused=*/true);
      for (int64_t k = 0; k < K; ++k) {
        at::Tensor dot = at::zeros({}, loss.options());
        for (size_t i = 0; i < params.size(); ++i)
          if (grads[i].defined()) dot = dot + (grads[i] * vs[k][i]).sum();
        if (!dot.requires_grad()) continue;  // the loss is linear in every parameter
        const auto hv = torch::autograd::grad({dot}, params, {}, /*retain_graph=*/true,
                                              /*create_graph=*/false, /*allow_unused=*/true);
        for (size_t i = 0; i < params.size(); ++i)
          if (hv[i].defined()) vhv[k] += (hv[i] * vs[k][i]).sum().item<double>();
      }
    });
    for (double x : vhv) {
      TORCH_CHECK(std::isfinite(x),
                  "hessian_trace: a Hessian-vector product is not finite (the "
                  "loss at this state is NaN / Inf?)");
      sum += x;
      sum2 += x * x;
      ++out.samples;
    }
    const double s = static_cast<double>(out.samples);
    out.trace = sum / s;
    const double var = std::max(0.0, (sum2 - s * out.trace * out.trace) / (s - 1.0));
    out.std_error = std::sqrt(var / s);
    if (out.samples >= opt.min_samples && out.std_error <= opt.tolerance * std::abs(out.trace)) {
      out.converged = true;
      break;
    }
  }
  return out;
}

}  // namespace swamp
