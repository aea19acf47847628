// The run's checkpoint: what a run has done (progress, models, masks, the group in training) as
// named tensors, and back. Resume is re-entering the round loop with this progress. Internal to
// swamp_core; the file format itself (atomic write, checksum) is swamp/checkpoint.h.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "masks.h"
#include "particles.h"
#include "plan.h"
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

// A checkpoint's entries, each checked before it is used: a missing entry, a wrong dtype or
// shape, a value out of its range or a non-finite one is one error naming the file and the
// entry (c10::Error), never a crash or a silent resume. Entries nobody asked for are refused too.
class Entries {
 public:
  Entries(std::string path, TensorMap m);
  [[noreturn]] void damaged(const std::string& key, const std::string& what) const;
  bool has(const std::string& key) const { return m_.count(key) != 0; }
  const at::Tensor& get(const std::string& key);
  int64_t integer(const std::string& key, int64_t lo, int64_t hi);  // an int64 scalar in [lo, hi]
  double real(const std::string& key, double lo, double hi);        // a finite float64 in [lo, hi]
  std::string text(const std::string& key);                         // uint8 [n]
  // The entry for a model tensor: same dtype and shape, finite values when floating.
  const at::Tensor& like(const std::string& key, const at::Tensor& model);
  void expect_all_used() const;

 private:
  std::string path_;
  TensorMap m_;
  std::set<std::string> used_;
};

class RunCheckpoint {
 public:
  // Disabled when options.dir is empty; otherwise makes sure the folder is writable.
  RunCheckpoint(const CheckpointOptions& options, const Config& cfg, const Plan& plan,
                std::string model_identity, const BatchSource& data);
  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  int64_t every_epochs() const { return options_.every_epochs; }
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

// A round's figures as text and back (exact: doubles with 17 significant digits), ending in a
// check line (a hash of the text before it). decode_round throws c10::Error saying what is wrong
// for text it did not write: a failed check, an unknown or repeated field, a malformed number.
std::string encode_round(const RoundResult& r);
RoundResult decode_round(const std::string& s);

}  // namespace swamp::engine
