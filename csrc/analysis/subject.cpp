#include "subject.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <set>

namespace swamp::analysis {
namespace {
// The run's data source, checked before anything holds a reference to it.
BatchSource& data_of(const RunParts& parts) {
  TORCH_CHECK_VALUE(parts.data != nullptr, "analysis: no data source");
  return *parts.data;
}
}  // namespace

Subject::Subject(const Config& cfg, const RunParts& parts)
    : cfg_(cfg),
      parts_(parts),
      source_(parts.model ? parts.model : std::make_shared<ZooModelSource>(cfg.model)),
      eval_(cfg, data_of(parts)),
      gen_(at::detail::createCPUGenerator(0)) {
  model_ = source_->create(ModelSpec{parts_.data->input_shape(), parts_.data->num_classes()}, 0);
  TORCH_CHECK(model_ != nullptr, "the model source returned no model");
  model_->to(parts_.data->device());
  model_->train(false);
  for (const auto& kv : model_->named_parameters(true)) entries_.emplace_back(kv.key(), kv.value());
  for (const auto& kv : model_->named_buffers(true)) entries_.emplace_back(kv.key(), kv.value());
}

void Subject::load(const State& state, const char* what) {
  std::set<std::string> known;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : entries_) {
    known.insert(name);
    auto it = state.find(name);
    TORCH_CHECK_VALUE(it != state.end(), what, " lacks '", name, "' (", source_->identity(), ")");
    TORCH_CHECK_VALUE(it->second.sizes() == t.sizes(), what, ": '", name, "' has shape ",
                      it->second.sizes(), ", the model's is ", t.sizes());
    TORCH_CHECK_VALUE(
        !it->second.is_floating_point() || at::isfinite(it->second).all().item<bool>(), what, ": '",
        name, "' holds NaN or infinite values");
    t.copy_(it->second);
  }
  for (const auto& kv : state)
    TORCH_CHECK_VALUE(known.count(kv.first) != 0, what, " has '", kv.first, "', which ",
                      source_->identity(), " does not");
}

int64_t Subject::train_count(int64_t train_samples) const {
  TORCH_CHECK_VALUE(train_samples >= 0, "analysis: train_samples must be >= 0, got ",
                    train_samples);
  const int64_t n = parts_.data->train_size();
  return train_samples == 0 ? n : std::min(train_samples, n);
}

void Subject::for_train_batches(int64_t n, const std::function<void(const Batch&)>& f) {
  const int64_t B = cfg_.eval_batch_size;
  for (int64_t s = 0, b = 0; s < n; s += B, ++b) {
    TrainRequest r;
    r.indices =
        at::arange(s, std::min(s + B, n), at::TensorOptions(at::kLong)).to(parts_.data->device());
    r.gen = &gen_;
    r.batch = b;
    f(parts_.data->train_batch(r));
  }
}

PassFigures Subject::train_pass(int64_t n) {
  torch::NoGradGuard no_grad;
  model_->train(false);
  double nll = 0.0, hits = 0.0;
  for_train_batches(n, [&](const Batch& b) {
    const at::Tensor lp = at::log_softmax(engine::forward(*model_, b), 1);
    nll += at::nll_loss(lp.to(at::kDouble), b.y, {}, at::Reduction::Sum).item<double>();
    hits += lp.argmax(1).eq(b.y).sum().item<double>();
  });
  return {nll / static_cast<double>(n), hits / static_cast<double>(n)};
}

PassFigures Subject::test_pass() {
  const engine::Metrics m = eval_.metrics(eval_.log_probs(*model_));
  return {m.nll, m.acc};
}

}  // namespace swamp::analysis
