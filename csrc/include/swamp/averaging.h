// Weight averaging: SWA inside a particle, uniform averaging across particles, and the batch-norm
// statistics that averaged weights need.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "swamp/export.h"
#include "swamp/processes.h"

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

// Averages the particles of a round, and says which of them this process trains: the seam for
// distributed training (swamp/distributed.h). The defaults describe one process holding all.
class SWAMP_API ParticleAverager {
 public:
  virtual ~ParticleAverager() = default;
  // `particles[p][i]` is tensor i of local particle p (the particles of
  // layout(total).contributes(), in order);
  // writes the uniform average over all `total_particles` particles (local and remote) into
  // `out[i]`, the sum taken in particle order.
  virtual void average(const std::vector<std::vector<at::Tensor>>& particles,
                       std::vector<at::Tensor>& out, int64_t total_particles) = 0;
  // The particles [first, last) of a round of n that this process trains.
  virtual std::pair<int64_t, int64_t> share(int64_t n) const { return {0, n}; }
  // This process's place in a round of n particles (n = 1 also for the ticket). The default:
  // share(n), trained alone.
  virtual ProcessLayout layout(int64_t n) const {
    const auto s = share(n);
    return ProcessLayout{1, 1, s.first, s.second, 0};
  }
  // Sums `tensors` in place over the processes that train this process's particle in a round of
  // n (layout(n).per_particle > 1; every member calls it with the same shapes, every step);
  // nothing to do when it trains alone.
  virtual void sum_in_group(int64_t n, std::vector<at::Tensor>& tensors) {
    (void)n;
    (void)tensors;
  }
  // One tensor per particle that this process contributes (layout(n).contributes(); same shape
  // for every particle) -> the tensors of all n particles, in particle order.
  virtual std::vector<at::Tensor> gather(const std::vector<at::Tensor>& local, int64_t n);
  // Whether this process writes checkpoints and results.
  virtual bool primary() const { return true; }
  // Whether a round's particles are spread over processes (checkpoints at round ends only).
  virtual bool spread() const { return false; }
  // Checked once before a run: every process must hold the same `fields` (name, value) of
  // `what`; a difference is an error naming the process, the field and both values.
  virtual void agree(const std::string& what,
                     const std::vector<std::pair<std::string, std::string>>& fields) {}
  virtual std::string describe() const { return "one process"; }
};

// All particles live in this process.
class SWAMP_API LocalAverager : public ParticleAverager {
 public:
  void average(const std::vector<std::vector<at::Tensor>>& particles, std::vector<at::Tensor>& out,
               int64_t total_particles) override;
};

// The uniform average of `particles` (all of a round, in particle order) into `out`: the sum in
// particle order, divided by their number (LocalAverager and DistributedAverager share it).
SWAMP_API void average_in_order(const std::vector<std::vector<at::Tensor>>& particles,
                                std::vector<at::Tensor>& out);

// Recomputes batch-norm running statistics for the current weights: resets them and takes the
// cumulative average (momentum = None) over `forward_batches` calls in train mode, without
// gradients, restoring each layer's momentum and the module's mode afterwards. Returns false
// when the model has no batch-norm layer (nothing to do).
SWAMP_API bool recompute_batchnorm(torch::nn::Module& model,
                                   const std::function<void()>& forward_batches);
// Whether `model` holds a batch-norm layer (whose statistics recompute_batchnorm recomputes).
SWAMP_API bool has_batchnorm(const torch::nn::Module& model);

}  // namespace swamp
