// The gradient all-reduce of a data-parallel step, overlapped with backward as DDP's reducer does:
// the parameters are put in buckets in the reverse of their order (the order backward produces
// their gradients), the first bucket small so that sending starts early; a hook after each
// parameter's gradient accumulation counts the bucket down, and a full bucket is flattened and its
// sum started while backward goes on. Buckets are started strictly in order (a bucket waits for
// the ones before it), so every member of the group makes the same collectives in the same order
// whatever its timing; a parameter that got no gradient this step (unused) keeps its bucket until
// finish(), which starts what is left, waits for every sum and writes the sums into the
// gradients. Internal to swamp_core.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "swamp/processes.h"

namespace swamp::engine {

class GradientBuckets {
 public:
  using Clock = PendingSum::Clock;
  using Start = std::function<PendingSum(const at::Tensor&)>;
  // `params`: the leaves whose gradients are summed (a model's trainable tensors, in order);
  // `start`: starts the sum of a flat tensor over the group. Hooks stay registered until the
  // object is destroyed.
  GradientBuckets(std::vector<at::Tensor> params, Start start, int64_t first_bucket_bytes,
                  int64_t bucket_bytes);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Before backward: every bucket empty.
  void prepare();
  // After backward: the rest started, every sum waited for, the gradients summed (a parameter
  // without a gradient gets the group's sum of zeros and its own).
  void finish();

 private:
  struct Hook;
  void ready(size_t param);
  void start_ready_buckets(bool all);

  std::vector<at::Tensor> params_;
  Start start_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> missing_;  // per bucket: gradients still to come this step
  size_t next_ = 0;               // the first bucket not yet started
  std::vector<at::Tensor> flats_;
  std::vector<PendingSum> pending_;
  std::vector<Clock::time_point> started_at_;
  Clock::duration blocked_{};  // this step's time spent starting sums (a synchronous one)
  bool in_step_ = false;
  std::mutex mutex_;
  // the gradient accumulators the hooks hang on (kept alive with them) and the hooks' keys
  std::vector<std::shared_ptr<void>> accumulators_;
  std::vector<std::function<void()>> unhook_;
};

}  // namespace swamp::engine
