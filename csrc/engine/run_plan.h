// The part of a run's plan (swamp/engine.h, RunPlan) that needs no model: the configuration
// validated once, the particles of each round, SWA, precision and the device resolved;
// channels_last stays to be decided (plan_run decides it from a model of the run). Internal.
#pragma once

#include "swamp/engine.h"

namespace swamp::engine {

RunPlan plan_without_model(const Config& cfg, bool check_model);

}  // namespace swamp::engine
