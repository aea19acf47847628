// Training a group of particles: each particle its own batch order (hashed seed), masked SGD,
// the learning-rate schedule, SWA snapshots at epoch ends. Knows nothing of checkpoints: it calls
// `save` where one is due. Internal to swamp_core.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../checkpoint/entries.h"
#include "gradient_buckets.h"
#include "particles.h"
#include "plan.h"
#include "swamp/averaging.h"
#include "swamp/batch_source.h"
#include "swamp/data.h"
#include "swamp/engine.h"
#include "swamp/optim.h"

namespace swamp::engine {

// Everything the training of a group of particles needs to continue from any step. Vectors
// hold one entry per particle of the group.
struct ParticleState {
  int64_t step = 0;
  MaskedSGD opt;
  std::vector<BatchOrder> orders;
  std::vector<uint64_t> streams;  // each particle's order seed (the key of its batches)
  RunningAverage swa;
  std::vector<double> epoch_loss;
  int64_t epoch_steps = 0;
  std::vector<double> last_loss;  // mean loss of each particle's last (or current) epoch
  // fp16 (Config::precision): the group's loss scale, each particle's skipped steps (gradients
  // that overflowed) and whether its last step was one of them
  std::optional<LossScaler> scaler;
  std::vector<int64_t> skipped;
  std::vector<uint8_t> skipped_now;

  int64_t size() const { return static_cast<int64_t>(orders.size()); }
};

// Where the trainer may save: `save()` at every `every_epochs`-th epoch end, every
// `every_steps`-th step and when interrupted (null: never).
struct SavePoints {
  std::function<void()> save;
  int64_t every_epochs = 0;
  int64_t every_steps = 0;
};

// Data parallel inside a particle: layout.per_particle processes train one particle together,
// this one computes its shard of every batch (ProcessLayout::shard), and `sum` adds the group's
// gradients (and losses) up before every step, so that every member makes the same step. The
// default: one process trains its particles alone.
struct DataParallel {
  ProcessLayout layout;  // group_rank of per_particle processes
  std::function<void(std::vector<at::Tensor>&)> sum;
  // starts the group's sum of one flat tensor (the loss, and the gradient buckets sent during
  // backward)
  std::function<PendingSum(const at::Tensor&)> start;
  bool on() const { return layout.per_particle > 1; }
};

class Trainer {
 public:
  Trainer(const Config& cfg, const Plan& plan, BatchSource& data, const Hooks& hooks);

  // Fresh training state for the particles of `grp` (the first is particle `first` of `round`,
  // -1: the ticket), starting at step `step`. Sets grp.first (each model's range of tensors in
  // the optimizer; sparse layers already entered).
  ParticleState start(Group& grp, const std::map<std::string, at::Tensor>& masks, int64_t round,
                      int64_t first, int64_t step);
  // A model that draws random numbers in training: each training forward first seeds torch's
  // default generator of the device from (particle, step), so that a run is the same whatever
  // the caller's generator state, particles draw different streams, and a resumed run draws what
  // the uninterrupted one drew.
  void set_draws_random(bool v) { draws_random_ = v; }
  // Training forwards in the channels-last memory order (Config::channels_last, resolved).
  void set_channels_last(bool v) { channels_last_ = v; }
  // Trains the group from st.step to `end`, taking SWA snapshots when `swa`; `dp`: with other
  // processes (then the group is one particle).
  void train(const Group& grp, ParticleState& st, int64_t round, int64_t first, int64_t end,
             bool swa, const SavePoints& save, const DataParallel& dp = {});

 private:
  at::Tensor batch_loss(Model& model, ParticleState& st, int64_t g0, int64_t G, int64_t epoch,
                        int64_t b, const std::vector<at::Tensor>& perms);
  at::Tensor step_group(const Group& grp, ParticleState& st, int64_t epoch, int64_t b,
                        const std::vector<at::Tensor>& perms, double lr);

  const Config& cfg_;
  const Plan& plan_;
  BatchSource& data_;
  const Hooks& hooks_;
  c10::Device device_;
  bool draws_random_ = false;
  bool channels_last_ = false;
  DataParallel dp_;                           // of the current train() call
  std::unique_ptr<GradientBuckets> buckets_;  // its gradient all-reduce, during backward
};

// The tensors the optimizer, SWA and averaging work on (the values of sparse layers instead of
// their weights), of every model of the group in order.
std::vector<at::Tensor> trainable(const Group& grp);
// values[offset...] into the model's trainable tensors.
void load_trainable(Model& model, const std::vector<at::Tensor>& values, size_t offset = 0);

// A group's training state in a checkpoint, under `prefix` (../checkpoint/entries.h). Restoring
// checks it against the step plan: the step, the position in the epoch, the SWA snapshot count
// and every particle's batch order follow from each other; momentum and SWA are zero where the
// masks have pruned.
void save_particle_state(TensorMap& out, const std::string& prefix, const ParticleState& st);
void restore_particle_state(Entries& e, const std::string& prefix, const c10::Device& dev,
                            const Plan& plan, int64_t train_size, double momentum,
                            ParticleState& st);

}  // namespace swamp::engine
