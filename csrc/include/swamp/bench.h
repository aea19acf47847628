// Benchmark entry points of the core: training throughput and step timings of zoo models (used by
// benchmarks/ through the Python module; not part of a run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "swamp/export.h"

namespace swamp {

// Training images per second of `model` (forward, backward and masked SGD step on random data of
// the given shape), timed over `steps` steps after one warm-up step.
SWAMP_API double train_throughput(const std::string& model, const std::vector<int64_t>& input_shape,
                                  int64_t num_classes, int64_t batch_size, int64_t steps,
                                  const std::string& device);

// Seconds per training step (forward, backward, masked SGD step on random data) of `particles`
// particles of a model pruned one-shot by global magnitude to `sparsity`: stacked in one model or
// one model after the other, with the dense masked step or sparse kernels for the linear layers
// ("off" / "on" / "auto" with sparse_density, as in Config). Median over `repeats` timings of
// `steps` steps, after a warm-up step.
struct StepBenchOptions {
  std::string model = "lenet_300_100";
  std::vector<int64_t> input_shape{1, 28, 28};
  int64_t num_classes = 10;
  int64_t batch_size = 128;
  int64_t particles = 1;
  bool stacked = true;
  double sparsity = 0.0;
  std::string sparse_kernels = "off";
  double sparse_density = 0.5;
  double sparse_conv_density = 0.1;
  int64_t steps = 20;
  int64_t repeats = 5;
  std::string device = "cpu";
  // The models step side by side, one thread each (the threads path) instead of one after the
  // other: one model per particle, or (stacked) one stacked model per lane.
  bool threads = false;
  // "global": one magnitude threshold over all prunable tensors (the method's pruning);
  // "layerwise": every prunable tensor pruned to `sparsity` by its own magnitudes.
  std::string prune = "global";
};
// Seconds of one training step (forward, backward, masked SGD) of the model `options` names:
// the median over `repeats` timings of `steps` steps each.
SWAMP_API double train_step_seconds(const StepBenchOptions& options);

}  // namespace swamp
