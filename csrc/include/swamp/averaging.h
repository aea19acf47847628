// Weight averaging, the maths only: SWA inside a particle, the average of a round's particles,
// and the batch-norm statistics that averaged weights need. Which process holds which particle is
// swamp/processes.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "swamp/export.h"

namespace swamp {

// Running (uniform) average of a list of tensors: SWA over the snapshots of one particle.
class SWAMP_API RunningAverage {
 public:
  void update(const std::vector<at::Tensor>& values);
  int64_t count() const { return count_; }
  const std::vector<at::Tensor>& value() const { return avg_; }
  void restore(std::vector<at::Tensor> values, int64_t count) {
    avg_ = std::move(values);
    count_ = count;
  }

 private:
  std::vector<at::Tensor> avg_;
  int64_t count_ = 0;
};

// How the particles of a round become one model: the seam for other averaging rules. Gets every
// particle of the round (gathered from the other processes first when they are spread, see
// swamp/processes.h): `particles[p][i]` is tensor i of particle p, in particle order; writes the
// result into `out[i]`.
class SWAMP_API ParticleAverager {
 public:
  virtual ~ParticleAverager() = default;
  virtual void average(const std::vector<std::vector<at::Tensor>>& particles,
                       std::vector<at::Tensor>& out) = 0;
};

// The method's rule: the uniform average (average_in_order).
class SWAMP_API UniformAverager : public ParticleAverager {
 public:
  void average(const std::vector<std::vector<at::Tensor>>& particles,
               std::vector<at::Tensor>& out) override;
};

// The uniform average of `particles` (all of a round, in particle order) into `out`: the sum in
// particle order, divided by their number (UniformAverager).
SWAMP_API void average_in_order(const std::vector<std::vector<at::Tensor>>& particles,
                                std::vector<at::Tensor>& out);

// Recomputes batch-norm running statistics for the current weights: resets them and takes the
// cumulative average (momentum = None) over `forward_batches` calls in train mode, without
// gradients, restoring each layer's momentum and the module's mode afterwards. Returns false
// when the model has no batch-norm layer (nothing to do).
SWAMP_API bool recompute_batchnorm(torch::nn::Module& model,
                                   const std::function<void()>& forward_batches);
// The running means, variances and batch counts of the batch-norm layers recompute_batchnorm
// recomputes, layer by layer in module order (those a layer holds).
SWAMP_API std::vector<at::Tensor> batchnorm_statistics(const torch::nn::Module& model);
// Whether `model` holds a batch-norm layer (whose statistics recompute_batchnorm recomputes).
SWAMP_API bool has_batchnorm(const torch::nn::Module& model);

}  // namespace swamp
