// Evaluation, shared by the engine (a round) and the analyses: batch-norm statistics for averaged
// weights, test log-probabilities, accuracy / NLL of one model and of the particles' prediction
// ensemble. Internal to swamp_core.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "swamp/batch_source.h"
#include "swamp/engine.h"
#include "swamp/models.h"

namespace swamp::engine {

struct Metrics {
  double acc = 0.0;
  double nll = 0.0;
  double ece = 0.0;  // expected calibration error, kEceBins equal-width confidence bins
};
constexpr int64_t kEceBins = 15;

// The model's outputs for a batch: one input tensor, or structured inputs.
at::Tensor forward(Model& model, const Batch& batch);

// A pass shared by processes that hold the same model: this one computes batches
// [part * K / parts, (part + 1) * K / parts) of the pass's K, and `sum` adds tensors up over the
// parts in place (each part fills its own rows of a zero tensor: the sum is every part's rows,
// exactly). The default: one process computes everything.
struct Sharding {
  int64_t part = 0, parts = 1;
  std::function<void(std::vector<at::Tensor>&)> sum;
  bool on() const { return parts > 1; }
  std::pair<int64_t, int64_t> batches(int64_t K) const {
    return {part * K / parts, (part + 1) * K / parts};
  }
};

class Evaluator {
 public:
  Evaluator(const Config& cfg, BatchSource& data) : cfg_(cfg), data_(data) {}

  // Batch-norm running statistics recomputed for the model's current weights: the mean of the
  // training batches' statistics (the cumulative average, as momentum=None) over the training set
  // in storage order, in batches of bn_batch_size (batch_size when 0), without augmentation; the
  // last partial batch is dropped (unless it is the only one). Each batch's statistics are taken
  // alone (Model::batchnorm_statistics) and summed in batch order in float64, so the figures are
  // the same bit for bit however many processes share the batches.
  void recompute_bn(Model& model, const Sharding& sh = {});
  // log_softmax of the model's test outputs, in eval mode, [test_size, classes]; shared: every
  // part computes whole evaluation batches, the same rows bit for bit as one process.
  at::Tensor log_probs(Model& model, const Sharding& sh = {});
  Metrics metrics(const at::Tensor& logp);
  // The particles' prediction ensemble: the mean of their probabilities (log-sum-exp of the
  // log-probabilities minus log N).
  Metrics ensemble_metrics(const std::vector<at::Tensor>& logps);

 private:
  const Config& cfg_;
  BatchSource& data_;
};

}  // namespace swamp::engine
