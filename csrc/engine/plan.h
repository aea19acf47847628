// The step plan of a run: how many steps an epoch has, where the ticket is taken, where SWA
// starts, and the learning-rate schedule over a round. Internal to swamp_core.
#pragma once

#include <cstdint>

#include "swamp/engine.h"
#include "swamp/optim.h"

namespace swamp::engine {

struct Plan {
  int64_t steps_per_epoch = 1;  // full batches (the last partial batch of an epoch is dropped)
  int64_t total_steps = 1;      // of a round, counted from the start of training
  int64_t rewind_step = 0;      // the ticket: every round restarts here
  int64_t swa_start_epoch = 0;  // SWA snapshots are the ends of epochs from here on
  bool swa = false;
  ScheduleOptions schedule;
};

// The epoch at whose end the first SWA snapshot is taken: floor(swa_start * epochs).
int64_t swa_start_epoch(const Config& cfg);

// Throws c10::ValueError when the data is too small for the config, or the ticket would be taken
// after the SWA phase starts.
Plan make_plan(const Config& cfg, int64_t train_size);

}  // namespace swamp::engine
