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

Metrics Evaluator::metrics(const at::Tensor& logp) {
  const at::Tensor y = data_.test_labels();
  Metrics m;
  m.acc = logp.argmax(1).eq(y).to(at::kDouble).mean().item<double>();
  m.nll = at::nll_loss(logp.to(at::kDouble), y).item<double>();
  return m;
}

Metrics Evaluator::ensemble_metrics(const std::vector<at::Tensor>& logps) {
  if (logps.size() == 1) return metrics(logps[0]);
  at::Tensor stacked = at::stack(logps, 0).to(at::kDouble);
  return metrics(at::logsumexp(stacked, {0}) - std::log(static_cast<double>(logps.size())));
}

}  // namespace swamp::engine
