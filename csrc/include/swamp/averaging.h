// Weight averaging: SWA inside a particle, uniform averaging across particles, and the batch-norm
// statistics that averaged weights need.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
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

// Averages the particles of a round. The seam for distributed training: an implementation backed
// by an all-reduce sums the local particles, reduces across processes and divides by the total.
class SWAMP_API ParticleAverager {
 public:
  virtual ~ParticleAverager() = default;
  // `particles[p][i]` is tensor i of local particle p; writes the uniform average over all
  // `total_particles` particles (local and remote) into `out[i]`.
  virtual void average(const std::vector<std::vector<at::Tensor>>& particles,
                       std::vector<at::Tensor>& out, int64_t total_particles) = 0;
};

// All particles live in this process.
class SWAMP_API LocalAverager : public ParticleAverager {
 public:
  void average(const std::vector<std::vector<at::Tensor>>& particles, std::vector<at::Tensor>& out,
               int64_t total_particles) override;
};

// Recomputes batch-norm running statistics for the current weights: resets them and takes the
// cumulative average (momentum = None) over `forward_batches` calls in train mode, without
// gradients, restoring each layer's momentum and the module's mode afterwards. Returns false
// when the model has no batch-norm layer (nothing to do).
SWAMP_API bool recompute_batchnorm(torch::nn::Module& model,
                                   const std::function<void()>& forward_batches);
SWAMP_API bool has_batchnorm(const torch::nn::Module& model);

}  // namespace swamp
