// The run's checkpoint: what a run has done (progress, models, masks, the group in training) as
// named tensors, and back. Resume is re-entering the round loop with this progress. Internal to
// swamp_core; the file format itself (atomic write, checksum) is swamp/checkpoint.h.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "masks.h"
#include "particles.h"
#include "swamp/batch_source.h"
#include "swamp/checkpoint.h"
#include "swamp/engine.h"
#include "trainer.h"

namespace swamp::engine {

// What a checkpoint records of the run's progress.
struct RunProgress {
  bool ticket_done = false;
  int64_t rounds_done = 0;
  int64_t masks_round = 0;     // the round the current masks are for
  int64_t particles_done = 0;  // in round rounds_done
  std::vector<double> losses;  // last-epoch losses of the finished particles of the round
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
  RunCheckpoint(const CheckpointOptions& options, const Config& cfg, std::string model_identity,
                const BatchSource& data);
  bool enabled() const { return !path_.empty(); }
  int64_t every_epochs() const { return options_.every_epochs; }
  // Whether there is a checkpoint to resume from (removed first when options.fresh).
  bool resumable();

  // `cur` (in `grp`): the group being trained, if any.
  void save(const RunProgress& progress, ParticleModels& models, const Masks& masks,
            double round_seconds, const ParticleState* cur = nullptr,
            const Group* grp = nullptr) const;
  // Refuses another configuration (only `rounds` may differ), model or data, naming what
  // differs. `start` makes the training state of a resumed group (its models already loaded).
  ResumedGroup restore(RunProgress& progress, ParticleModels& models, Masks& masks,
                       const std::function<ParticleState(Group&)>& start) const;

 private:
  const CheckpointOptions& options_;
  const Config& cfg_;
  std::string identity_, path_, fingerprint_;
};

// A round's figures as text and back (exact: doubles with 17 significant digits).
std::string encode_round(const RoundResult& r);
RoundResult decode_round(const std::string& s);

}  // namespace swamp::engine
