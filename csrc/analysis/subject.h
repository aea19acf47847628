// What an analysis looks at: one model of the run's architecture on the data's device, loaded
// with a given state, and the figures of a pass over the training or test set. Internal.
#pragma once

#include <ATen/core/Generator.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../evaluation/evaluation.h"
#include "swamp/analysis.h"
#include "swamp/model_source.h"

namespace swamp::analysis {

// Loss (mean cross-entropy) and accuracy of a pass.
struct PassFigures {
  double loss = 0.0, acc = 0.0;
};

class Subject {
 public:
  Subject(const Config& cfg, const RunParts& parts);

  Model& model() { return *model_; }
  BatchSource& data() { return *parts_.data; }
  engine::Evaluator& evaluator() { return eval_; }
  // The model's parameters and buffers, in order, with their names.
  const std::vector<std::pair<std::string, at::Tensor>>& entries() const { return entries_; }
  // Copies `state` into the model (every parameter and buffer, same shapes: c10::ValueError
  // naming the first difference; `what` names the state in messages).
  void load(const State& state, const char* what);
  // Training samples [0, n) in storage order with labels, batch by batch (no augmentation
  // unless the source adds it): n = train_samples or all.
  int64_t train_count(int64_t train_samples) const;
  void for_train_batches(int64_t n, const std::function<void(const Batch&)>& f);
  PassFigures train_pass(int64_t n);  // eval mode
  PassFigures test_pass();            // eval mode

 private:
  const Config& cfg_;
  RunParts parts_;
  std::shared_ptr<const ModelSource> source_;
  ModelPtr model_;
  engine::Evaluator eval_;
  std::vector<std::pair<std::string, at::Tensor>> entries_;
  at::Generator gen_;
};

}  // namespace swamp::analysis
