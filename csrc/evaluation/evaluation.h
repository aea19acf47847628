// Evaluation, shared by the engine (a round) and the analyses: batch-norm statistics for averaged
// weights, test log-probabilities, accuracy / NLL of one model and of the particles' prediction
// ensemble. Internal to swamp_core.
#pragma once

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

class Evaluator {
 public:
  Evaluator(const Config& cfg, BatchSource& data) : cfg_(cfg), data_(data) {}

  // Batch-norm running statistics recomputed for the model's current weights: the cumulative
  // average over the training set in storage order, in batches of bn_batch_size (batch_size when
  // 0), without augmentation; the last partial batch is dropped (unless it is the only one).
  void recompute_bn(Model& model);
  // log_softmax of the model's test outputs, in eval mode, [test_size, classes].
  at::Tensor log_probs(Model& model);
  Metrics metrics(const at::Tensor& logp);
  // The particles' prediction ensemble: the mean of their probabilities (log-sum-exp of the
  // log-probabilities minus log N).
  Metrics ensemble_metrics(const std::vector<at::Tensor>& logps);

 private:
  const Config& cfg_;
  BatchSource& data_;
};

}  // namespace swamp::engine
