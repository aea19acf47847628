// RunPlan: what a run will do, decided once before training (see swamp/engine.h).
#include "run_plan.h"

#include <algorithm>

namespace swamp {

std::vector<int64_t> particles_per_round(const Config& cfg) {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(std::max<int64_t>(cfg.rounds, 0)));
  for (int64_t r = 0; r < cfg.rounds; ++r) out.push_back(particles_in_round(cfg, r));
  return out;
}

namespace engine {
RunPlan plan_without_model(const Config& cfg, bool check_model) {
  validate_config(cfg, check_model);
  RunPlan plan;
  plan.particles = particles_per_round(cfg);
  plan.swa = swa_enabled(cfg);
  plan.precision = cfg.precision;
  plan.device = resolve_device(cfg.device).str();
  return plan;
}
}  // namespace engine

RunPlan plan_run(const Config& cfg, const ModelSource& model, const ModelSpec& spec) {
  RunPlan plan = engine::plan_without_model(cfg, /*check_model=*/false);  // the source is given
  const ModelPtr one = model.create(spec, 0);
  plan.channels_last = channels_last_on(cfg, *one, c10::Device(plan.device));
  return plan;
}

}  // namespace swamp
