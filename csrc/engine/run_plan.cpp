// RunPlan: what a run will do, decided once before training (see swamp/engine.h).
#include <algorithm>

#include "swamp/engine.h"

namespace swamp {

std::vector<int64_t> particles_per_round(const Config& cfg) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(std::max<int64_t>(cfg.rounds, 0)));
  for (int64_t r = 0; r < cfg.rounds; ++r) out.push_back(particles_in_round(cfg, r));
  return out;
}

RunPlan plan_run(const Config& cfg, const ModelSource& model, const ModelSpec& spec) {
  validate_config(cfg, /*check_model=*/false);  // the model source is given
  const c10::Device device = resolve_device(cfg.device);
  RunPlan plan;
  plan.particles = particles_per_round(cfg);
  plan.swa = swa_enabled(cfg);
  plan.precision = cfg.precision;
  plan.device = device.str();
  const ModelPtr one = model.create(spec, 0);
  plan.channels_last = channels_last_on(cfg, *one, device);
  return plan;
}

}  // namespace swamp
