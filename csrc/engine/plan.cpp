#include "plan.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace swamp::engine {

int64_t swa_start_epoch(const Config& cfg) {
  return std::min<int64_t>(
      cfg.epochs - 1,
      static_cast<int64_t>(std::floor(cfg.swa_start * static_cast<double>(cfg.epochs))));
}

Plan make_plan(const Config& cfg, int64_t train_size) {
  Plan p;
  p.steps_per_epoch = train_size / cfg.batch_size;
  TORCH_CHECK_VALUE(p.steps_per_epoch >= 1, "dataset: x_train has ", train_size,
                    " samples, fewer than one batch (", cfg.batch_size, ")");
  p.total_steps = cfg.epochs * p.steps_per_epoch;
  p.rewind_step = cfg.rewind_steps >= 0 ? cfg.rewind_steps : cfg.rewind_epochs * p.steps_per_epoch;
  TORCH_CHECK_VALUE(p.rewind_step < p.total_steps, "Config.rewind_steps (", p.rewind_step,
                    ") must be below the total number of steps (", p.total_steps, ")");
  p.swa = swa_enabled(cfg);
  p.swa_start_epoch = swa_start_epoch(cfg);
  TORCH_CHECK_VALUE(!p.swa || p.rewind_step <= p.swa_start_epoch * p.steps_per_epoch,
                    "Config.swa_start: SWA would start at step ",
                    p.swa_start_epoch * p.steps_per_epoch, " (epoch ", p.swa_start_epoch,
                    "), before the rewind point (step ", p.rewind_step,
                    "); rewind earlier or start SWA later");
  ScheduleOptions& s = p.schedule;
  s.kind = cfg.schedule;
  s.lr = cfg.lr;
  s.total_steps = p.total_steps;
  s.warmup_steps = static_cast<int64_t>(
      std::llround(cfg.warmup_epochs * static_cast<double>(p.steps_per_epoch)));
  s.swa_start_step = p.swa ? p.swa_start_epoch * p.steps_per_epoch : -1;
  s.swa_lr = cfg.swa_lr;
  return p;
}

}  // namespace swamp::engine
