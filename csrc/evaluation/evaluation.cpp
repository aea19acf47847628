#include "evaluation.h"

#include <ATen/Functions.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>

#include "swamp/averaging.h"

namespace swamp::engine {

at::Tensor forward(Model& model, const Batch& batch) {
  return batch.x.defined() ? model.forward(batch.x) : model.forward_inputs(batch.inputs);
}

void Evaluator::recompute_bn(Model& model) {
  const int64_t B = cfg_.bn_batch_size > 0 ? cfg_.bn_batch_size : cfg_.batch_size;
  const int64_t n = data_.train_size();
  model.recompute_batchnorm([&] {
    data_.begin_scan(Split::kTrain, B, n < B ? n : n / B * B);
    for (int64_t s = 0; s + B <= n || s == 0; s += B)
      forward(model, data_.train_inputs(s, std::min(B, n - s)));
  });
}

at::Tensor Evaluator::log_probs(Model& model) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.train(false);
  std::vector<at::Tensor> parts;
  const int64_t n = data_.test_size();
  data_.begin_scan(Split::kTest, cfg_.eval_batch_size, n);
  for (int64_t s = 0; s < n; s += cfg_.eval_batch_size) {
    const int64_t len = std::min(cfg_.eval_batch_size, n - s);
    parts.push_back(at::log_softmax(forward(model, data_.test_batch(s, len)), 1));
  }
  model.train(was_training);
  return at::cat(parts, 0);
}

namespace {
// ECE = sum over bins b of |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|, the samples
// binned by their top probability into kEceBins equal-width bins of (0, 1] (Guo et al. 2017).
double calibration_error(const at::Tensor& logp, const at::Tensor& y) {
  const at::Tensor lp = logp.to(at::kDouble).cpu();
  const auto [top, pred] = lp.max(1);
  const at::Tensor conf = top.exp().contiguous();
  const at::Tensor hit = pred.eq(y.cpu()).to(at::kDouble).contiguous();
  const double* c = conf.const_data_ptr<double>();
  const double* h = hit.const_data_ptr<double>();
  std::vector<double> sc(kEceBins, 0.0), sh(kEceBins, 0.0);  // confidences, hits per bin
  const int64_t N = conf.numel();
  for (int64_t i = 0; i < N; ++i) {
    // bin b holds confidences in (b / B, (b + 1) / B]
    const auto b = std::clamp<int64_t>(
        static_cast<int64_t>(std::ceil(c[i] * static_cast<double>(kEceBins))) - 1, 0, kEceBins - 1);
    sc[b] += c[i];
    sh[b] += h[i];
  }
  double ece = 0.0;
  for (int64_t b = 0; b < kEceBins; ++b) ece += std::abs(sh[b] - sc[b]) / static_cast<double>(N);
  return ece;
}
}  // namespace

Metrics Evaluator::metrics(const at::Tensor& logp) {
  const at::Tensor y = data_.test_labels();
  Metrics m;
  m.acc = logp.argmax(1).eq(y).to(at::kDouble).mean().item<double>();
  m.nll = at::nll_loss(logp.to(at::kDouble), y).item<double>();
  m.ece = calibration_error(logp, y);
  return m;
}

Metrics Evaluator::ensemble_metrics(const std::vector<at::Tensor>& logps) {
  if (logps.size() == 1) return metrics(logps[0]);
  at::Tensor stacked = at::stack(logps, 0).to(at::kDouble);
  return metrics(at::logsumexp(stacked, {0}) - std::log(static_cast<double>(logps.size())));
}

}  // namespace swamp::engine
