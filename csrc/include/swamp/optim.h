// SGD whose updates respect pruning masks, and the learning-rate schedule.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "swamp/export.h"

namespace swamp {

// Dynamic loss scaling for fp16 training (torch.amp.GradScaler's rule): the loss is multiplied by
// scale() before the backward pass; unscale() divides the gradients by it and says whether all
// are finite; a step with an overflow is skipped by the caller, and update() then multiplies the
// scale by backoff_factor, while growth_interval clean steps in a row multiply it by
// growth_factor.
struct LossScaleOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class SWAMP_API LossScaler {
 public:
  explicit LossScaler(LossScaleOptions options = {});
  double scale() const { return scale_; }
  int64_t growth_tracker() const { return tracker_; }  // clean steps since the last change
  // Steps skipped in a row (an overflow every step means divergence, not a large scale).
  int64_t consecutive_skips() const { return consecutive_; }
  // Divides every defined gradient by scale() in place; true when all of them are finite.
  bool unscale(const std::vector<at::Tensor>& grads) const;
  void update(bool found_inf);
  void restore(double scale, int64_t growth_tracker, int64_t consecutive_skips);

 private:
  LossScaleOptions o_;
  double scale_;
  int64_t tracker_ = 0, consecutive_ = 0;
};

struct SgdOptions {
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 0.0;
};

// SGD with momentum and weight decay (PyTorch's semantics). For a masked parameter the decayed
// gradient is multiplied by the mask before it enters the momentum buffer, and the parameter is
// multiplied by the mask after the step: pruned weights, their effective gradients and their
// momentum stay exactly zero, so neither momentum nor weight decay can revive them.
class SWAMP_API MaskedSGD {
 public:
  // `masks[i]` is the bool mask of `params[i]`, or undefined for unmasked parameters.
  MaskedSGD(std::vector<at::Tensor> params, std::vector<at::Tensor> masks, SgdOptions options);
  // CPU float/double parameters: one fused pass per parameter; otherwise foreach kernels.
  void step(double lr) { step(lr, 0, params_.size()); }
  // Only parameters [begin, end): one particle's, when particles train concurrently (every
  // parameter's update is independent of the others').
  void step(double lr, size_t begin, size_t end);
  // Releases the gradients (PyTorch's set_to_none): the next backward hands its gradient over
  // instead of adding it to zeros. Parameters without a gradient are skipped by step().
  void zero_grad() { zero_grad(0, params_.size()); }
  void zero_grad(size_t begin, size_t end);
  size_t size() const { return params_.size(); }
  const std::vector<at::Tensor>& params() const { return params_; }
  // The masks as given (parameters' dtype; undefined: unmasked).
  const std::vector<at::Tensor>& masks() const { return masks_; }
  const std::vector<at::Tensor>& momentum_buffers() const { return buffers_; }
  // Restores buffers saved from momentum_buffers() (undefined entries: no step taken yet).
  void set_momentum_buffers(std::vector<at::Tensor> buffers);

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> masks_;  // float copies of the masks, same dtype as the parameters
  std::vector<at::Tensor> buffers_;
  SgdOptions opt_;
};

struct ScheduleOptions {
  std::string kind = "cosine";  // "cosine", "step" or "constant"
  double lr = 0.1;
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;
  // The main phase runs from the end of warm-up (a linear ramp to lr) to swa_start_step (or
  // total_steps without SWA): "cosine" decays from lr to swa_lr (to 0 without SWA), "step" is lr,
  // then lr/10 from half of the main phase and lr/100 from three quarters (not clamped: a decayed
  // stage may lie below swa_lr), "constant" is lr. From swa_start_step on the learning rate is
  // the constant swa_lr. swa_start_step < 0: no SWA phase.
  int64_t swa_start_step = -1;
  double swa_lr = 0.05;
};

// The learning rate of `step` (0-based, counted from the initialisation) under `s`.
SWAMP_API double learning_rate(const ScheduleOptions& s, int64_t step);

}  // namespace swamp
