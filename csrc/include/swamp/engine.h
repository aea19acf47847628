// The IMP / SWAMP run: ticket, rounds of (rewind, train particles, average, prune), evaluation.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "swamp/averaging.h"
#include "swamp/data.h"
#include "swamp/export.h"

namespace swamp {

struct Config {
  std::string model = "lenet_300_100";
  std::string method = "swamp";  // imp | imp_swa | swamp | swamp_plus
  int64_t particles = 4;
  int64_t rounds = 5;
  double prune_ratio = 0.2;
  int64_t epochs = 10;
  int64_t rewind_epochs = 1;
  int64_t rewind_steps = -1;  // >= 0 overrides rewind_epochs
  int64_t batch_size = 128;
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";  // cosine | step | constant
  double warmup_epochs = 0.0;
  double swa_start = 0.75;  // fraction of the epochs after which SWA starts
  double swa_lr = 0.05;
  int use_swa = -1;                    // -1: the method's default; 0 / 1 force it off / on
  int64_t single_particle_rounds = 2;  // swamp_plus: rounds trained with one particle
  bool keep_first_last_dense = false;
  uint64_t seed = 0;
  std::string device = "cpu";
  int64_t eval_batch_size = 1000;
  int64_t bn_batch_size = 0;  // 0: batch_size
  // CUDA: deterministic algorithms (cuDNN deterministic, no benchmark, deterministic index
  // kernels) for the run; CPU results are bitwise reproducible with the same thread count anyway.
  bool deterministic = false;
  // Data augmentation of the training batches (per particle, from the particle's generator).
  bool augment = false;
  int64_t crop_padding = 4;
  bool flip = true;
  // How the particles of a round train: "stacked" (all in one model, one forward/backward per
  // step, see swamp/layers.h), "sequential" (one after the other, each step using every intra-op
  // thread), "threads" (CPU: side by side, one thread per particle, in lock step) or "auto" (the
  // faster for this device and model, see particle_path). All give the same results up to float
  // rounding.
  std::string particle_mode = "auto";
  // Sparse kernels for pruned linear layers (CPU): "auto" (layers at or below sparse_density),
  // "on" (every pruned linear layer) or "off". Same results as the dense masked step up to float
  // rounding.
  std::string sparse_kernels = "auto";
  double sparse_density = 0.5;
};

// Throws c10::ValueError naming the field for anything out of range.
SWAMP_API void validate_config(const Config& cfg);
// Particles and SWA used in round `round` by the configured method.
SWAMP_API int64_t particles_in_round(const Config& cfg, int64_t round);
SWAMP_API bool swa_enabled(const Config& cfg);
// How `particles` particles of a round train: config.particle_mode, or the auto rule for the
// device, `model` (one particle of the architecture) and the intra-op thread count.
enum class ParticlePath { kSequential, kStacked, kThreads };
SWAMP_API ParticlePath particle_path(const Config& cfg, const torch::nn::Module& model,
                                     int64_t particles);
SWAMP_API const char* particle_path_name(ParticlePath path);
// The threads path: how many particles train at once (one thread each): the intra-op thread
// count, at most `particles`; 1 where this build cannot run particles concurrently.
SWAMP_API int64_t particle_lanes(int64_t particles);
// The threads path: particles stacked in each lane's model (the lanes' particles train as one
// stacked model each: models made of linear layers only, when the particles divide evenly over
// the lanes), else 1 (one model per particle).
SWAMP_API int64_t lane_stack(const torch::nn::Module& model, int64_t particles);

struct RoundResult {
  int64_t round = 0;
  int64_t particles = 1;
  double sparsity = 0.0;      // over the weights eligible for pruning (exact)
  double sparsity_all = 0.0;  // over all conv / linear weights (incl. ones kept dense)
  int64_t remaining = 0;      // unpruned eligible weights
  int64_t prunable = 0;       // eligible weights
  double test_acc = 0.0;      // the round's final (averaged) model
  double test_nll = 0.0;
  double ensemble_acc = 0.0;  // prediction ensemble of the particles
  double ensemble_nll = 0.0;
  std::vector<double> particle_acc;
  std::vector<double> particle_nll;
  std::vector<std::pair<std::string, double>> layer_density;
  double train_loss = 0.0;  // mean training loss over the last epoch of the particles
  double seconds = 0.0;
};

struct Progress {
  int64_t round = 0;
  int64_t particle = 0;  // -1: ticket
  int64_t particles = 1;
  int64_t epoch = 0;
  int64_t epochs = 0;
  double loss = 0.0;  // mean training loss of the epoch
  double lr = 0.0;
};

struct Hooks {
  std::function<void(const RoundResult&)> on_round;
  std::function<void(const Progress&)> on_epoch;
  // Called between training steps; may throw to stop the run (e.g. on Ctrl-C).
  std::function<void()> check_interrupt;
  // Called once at the start of a resumed run with the rounds completed before.
  std::function<void(const std::vector<RoundResult>&)> on_restore;
  // Particle averaging; a LocalAverager when not set.
  std::shared_ptr<ParticleAverager> averager;
};

struct CheckpointOptions {
  std::string dir;           // empty: no checkpoints
  int64_t every_epochs = 1;  // also inside a particle's training, every this many epochs (0: never)
  bool fresh = false;        // ignore (and replace) an existing checkpoint
};

struct RunResult {
  Config config;
  std::vector<RoundResult> rounds;
  std::map<std::string, at::Tensor> masks;  // eligible parameters only (bool)
  std::map<std::string, at::Tensor>
      state;  // final averaged weights and buffers, zeros where masked
};

// Runs IMP / SWAMP. With checkpoint.dir set, writes <dir>/checkpoint.swamp at the end of every
// round, after every particle, every `every_epochs` epochs and when interrupted (an exception
// thrown by hooks.check_interrupt), and resumes from it: a resumed run gives bitwise the same
// result on the CPU as one never interrupted. Only `rounds` may differ from the checkpoint's config
// (to extend a finished run); any other difference is an error naming the fields.
SWAMP_API RunResult run_imp(const Config& cfg, const Dataset& data, const Hooks& hooks = {},
                            const CheckpointOptions& checkpoint = {});

// Training images per second of `model` (forward, backward and masked SGD step on random data of
// the given shape), timed over `steps` steps after one warm-up step.
SWAMP_API double train_throughput(const std::string& model, const std::vector<int64_t>& input_shape,
                                  int64_t num_classes, int64_t batch_size, int64_t steps,
                                  const std::string& device);

// Seconds per training step (forward, backward, masked SGD step on random data) of `particles`
// particles of a model pruned one-shot by global magnitude to `sparsity`: stacked in one model or
// one model after the other, with the dense masked step or sparse kernels for the linear layers
// ("off" / "on" / "auto" with sparse_density, as in Config). Median over `repeats` timings of
// `steps` steps, after a warm-up step.
struct StepBenchOptions {
  std::string model = "lenet_300_100";
  std::vector<int64_t> input_shape{1, 28, 28};
  int64_t num_classes = 10;
  int64_t batch_size = 128;
  int64_t particles = 1;
  bool stacked = true;
  double sparsity = 0.0;
  std::string sparse_kernels = "off";
  double sparse_density = 0.5;
  int64_t steps = 20;
  int64_t repeats = 5;
  std::string device = "cpu";
  // The models step side by side, one thread each (the threads path) instead of one after the
  // other: one model per particle, or (stacked) one stacked model per lane.
  bool threads = false;
};
SWAMP_API double train_step_seconds(const StepBenchOptions& options);

// The configuration as (field, value) text pairs, in declaration order.
SWAMP_API std::vector<std::pair<std::string, std::string>> config_fields(const Config& cfg);

}  // namespace swamp
