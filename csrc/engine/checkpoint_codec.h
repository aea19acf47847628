// The run's checkpoint: what a run has done, as named tensors, and back. Each part saves and
// restores itself (../checkpoint/entries.h: models; Masks; ParticleState in trainer.h; round
// records in round_text.h; the run's identity in run_identity.h); this file puts them together
// and checks them against each other: counters, masks against the round records and the weights
// they were pruned from. Resume is re-entering the round loop with this progress. Internal to
// swamp_core; the file format itself (atomic write, checksum) is swamp/checkpoint.h.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../checkpoint/entries.h"
#include "masks.h"
#include "particles.h"
#include "plan.h"
#include "round_text.h"
#include "swamp/batch_source.h"
#include "swamp/checkpoint.h"
#include "swamp/engine.h"
#include "trainer.h"

namespace swamp::engine {

// What a checkpoint records of the run's progress.
struct RunProgress {
  bool ticket_done = false;
  int64_t rounds_done = 0;
  int64_t masks_round = 0;       // the round the current masks are for
  int64_t particles_done = 0;    // in round rounds_done
  std::vector<double> losses;    // last-epoch losses of the finished particles of the round
  std::vector<int64_t> skipped;  // their skipped fp16 steps (0 in other precisions)
  std::vector<RoundResult> results;
  double round_seconds = 0.0;  // time spent in the current round before a resume
};

// The group that was in training when the checkpoint was written.
struct ResumedGroup {
  Group group;
  std::unique_ptr<ParticleState> state;
};

class RunCheckpoint {
 public:
  // Disabled when options.dir is empty; otherwise makes sure the folder is writable.
  RunCheckpoint(const CheckpointOptions& options, const Config& cfg, const Plan& plan,
                std::string model_identity, const BatchSource& data);
  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  int64_t every_epochs() const { return options_.every_epochs; }
  int64_t every_steps() const { return options_.every_steps; }
  // Whether there is a checkpoint to resume from (removed first when options.fresh).
  bool resumable();

  // `cur` (in `grp`): the group being trained, if any.
  void save(const RunProgress& progress, ParticleModels& models, const Masks& masks,
            double round_seconds, const ParticleState* cur = nullptr,
            const Group* grp = nullptr) const;
  // Refuses another configuration (only `rounds` may differ), model or data, naming what
  // differs, and a checkpoint whose content is inconsistent (Entries; counters against each
  // other and the config, masks against the round records and the weights they were pruned
  // from, pruned weights and their momentum zero). `start` makes the training state of a resumed
  // group (its models already loaded).
  ResumedGroup restore(RunProgress& progress, ParticleModels& models, Masks& masks,
                       const std::function<ParticleState(Group&)>& start) const;

 private:
  ResumedGroup restore_checked(Entries& e, RunProgress& progress, ParticleModels& models,
                               Masks& masks,
                               const std::function<ParticleState(Group&)>& start) const;
  int64_t rounds_of(Entries& e, const std::string& saved_config) const;
  void check_round(Entries& e, const std::string& key, const RoundResult& r, int64_t i,
                   int64_t eligible, int64_t remaining,
                   const std::vector<std::string>& prunable) const;

  const CheckpointOptions& options_;
  const Config& cfg_;
  const Plan& plan_;
  int64_t train_size_ = 0;
  std::string identity_, path_, fingerprint_;
};

}  // namespace swamp::engine
