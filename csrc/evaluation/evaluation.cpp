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

void Evaluator::recompute_bn(Model& model, const Sharding& sh) {
  const int64_t B = cfg_.bn_batch_size > 0 ? cfg_.bn_batch_size : cfg_.batch_size;
  const int64_t n = data_.train_size();
  const int64_t K = n < B ? 1 : n / B;  // batches (a last partial one dropped)
  const int64_t end = n < B ? n : K * B;
  const std::vector<at::Tensor> stats = model.batchnorm_statistics();
  if (stats.empty()) {  // statistics the core cannot see: the whole pass, here
    model.recompute_batchnorm([&] {
      data_.begin_scan(Split::kTrain, B, end);
      for (int64_t s = 0; s < end; s += B)
        forward(model, data_.train_inputs(s, std::min(B, n - s)));
    });
    return;
  }
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> floats;
  int64_t width = 0;
  for (const auto& t : stats)
    if (t.is_floating_point()) {
      floats.push_back(t);
      width += t.numel();
    }
  // one row per batch: its statistics alone (a recompute over that batch: the batch's mean and
  // unbiased variance, exactly as the layer computes them), in float64
  at::Tensor rows = at::zeros({K, width}, stats[0].options().dtype(at::kDouble));
  const auto [k0, k1] = sh.batches(K);
  if (k0 < k1) data_.begin_scan_range(Split::kTrain, B, k0 * B, std::min(end, k1 * B));
  for (int64_t k = k0; k < k1; ++k) {
    const bool any = model.recompute_batchnorm(
        [&] { forward(model, data_.train_inputs(k * B, std::min(B, n - k * B))); });
    TORCH_CHECK(any,
                "recompute_batchnorm: the model gave batch-norm statistics but has no "
                "batch norm to recompute");
    int64_t at = 0;
    for (const auto& t : floats) {
      rows[k].narrow(0, at, t.numel()).copy_(t.reshape({-1}));
      at += t.numel();
    }
  }
  if (sh.on()) {
    std::vector<at::Tensor> all{rows};
    sh.sum(all);
  }
  // the mean over batches: the same table everywhere, reduced the same way
  const at::Tensor mean = rows.sum(0).div_(static_cast<double>(K));
  int64_t at = 0;
  for (auto& t : floats) {
    t.copy_(mean.narrow(0, at, t.numel()).view(t.sizes()));
    at += t.numel();
  }
  for (const auto& t : stats)
    if (!t.is_floating_point()) t.fill_(K);
}

at::Tensor Evaluator::log_probs(Model& model, const Sharding& sh) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.train(false);
  std::vector<at::Tensor> parts;
  const int64_t n = data_.test_size();
  const int64_t E = cfg_.eval_batch_size;
  const int64_t K = (n + E - 1) / E;
  const auto [k0, k1] = sh.batches(K);
  if (k0 < k1) data_.begin_scan_range(Split::kTest, E, k0 * E, std::min(n, k1 * E));
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t len = std::min(E, n - k * E);
    parts.push_back(at::log_softmax(forward(model, data_.test_batch(k * E, len)), 1));
  }
  model.train(was_training);
  if (!sh.on()) return at::cat(parts, 0);
  // every part's rows in place in a zero table (float32, or float64 for a float64 model), summed
  const auto params = model.parameters(true);
  const auto dtype =
      !params.empty() && params[0].scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<at::Tensor> all{
      at::zeros({n, data_.num_classes()}, at::TensorOptions().dtype(dtype).device(data_.device()))};
  if (!parts.empty())
    all[0].narrow(0, k0 * E, std::min(n, k1 * E) - k0 * E).copy_(at::cat(parts, 0));
  sh.sum(all);
  return all[0];
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
