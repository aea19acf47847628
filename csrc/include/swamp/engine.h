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
#include "swamp/batch_source.h"
#include "swamp/data.h"
#include "swamp/export.h"
#include "swamp/model_source.h"
#include "swamp/processes.h"
#include "swamp/round_record.h"

namespace swamp {

// Every field of the run configuration, once: (type, name, default). The struct, its text form
// (config_fields: checkpoints, results) and the Python binding are generated from this list;
// validate_config checks each field's range. Field notes:
//   method          imp | imp_swa | swamp | swamp_plus
//   rewind_steps    >= 0 overrides rewind_epochs (-1: unset)
//   schedule        cosine | step | constant (see learning_rate in swamp/optim.h)
//   swa_start       fraction of the epochs after which SWA starts (at an epoch end)
//   use_swa         -1: the method's default; 0 / 1 force it off / on
//   single_particle_rounds  swamp_plus: rounds trained with one particle
//   pruning         how a round's mask shrinks: "global" magnitude over all eligible weights (the
//                   method), "layerwise" magnitude (each layer loses prune_ratio of its weights)
//                   , "random" (the control: each layer loses as many as global magnitude would
//                   take from it, at random positions) or an N:M pattern such as "2:4": in every
//                   group of M consecutive weights along a layer's rows (a conv weight flattened
//                   per output channel) the largest |w| of the round's average are kept, one
//                   fewer per group each round from M:M down to N:M (rounds >= M - N + 1;
//                   prune_ratio is not used); layers whose rows are not whole groups of M stay
//                   dense. See swamp/pruning.h
//   bn_batch_size   0: batch_size
//   deterministic   CUDA: deterministic algorithms (cuDNN deterministic, no benchmark,
//                   deterministic index kernels; CUBLAS_WORKSPACE_CONFIG must be set). CPU results
//                   are bitwise reproducible with the same thread count anyway.
//   augment         random crop (crop_padding) and flip of the training batches, per particle
//                   from the particle's generator
//   particle_mode   how the particles of a round train: "stacked" (all in one model, one
//                   forward/backward per step, see swamp/layers.h), "sequential" (one after the
//                   other, each step using every intra-op thread), "threads" (CPU: side by side,
//                   one thread per particle, in lock step) or "auto" (see particle_path). All
//                   give the same results up to float rounding.
//   precision       "fp32" (everything in float32), "bf16" or "fp16": the training forward pass
//                   and loss run under autocast in that dtype on the run's device (the backward
//                   pass in the dtypes the forward chose); weights, gradients, momentum, SWA,
//                   the particle average, batch-norm statistics, pruning scores, evaluation and
//                   the batch-norm recompute stay float32. fp16 scales the loss dynamically
//                   (LossScaler, swamp/optim.h): a step whose gradients overflow is skipped and
//                   counted (RoundResult::skipped_steps). The sparse kernels compute in float32.
//   diagnostics     per-particle figures of a round: each particle's batch-norm recompute and
//                   evaluation and the particles' prediction ensemble (RoundResult particle_*,
//                   ensemble_*). false skips them (particle lists empty, ensemble figures NaN):
//                   the average, its figures and the masks are unchanged.
//   channels_last   "auto", "true" or "false": training forwards compute convolutions in the
//                   channels-last (NHWC) memory order (layers::ChannelsLastGuard, swamp/layers.h:
//                   4-D inputs and the zoo's conv weights are NHWC copies inside the forward; the
//                   parameters, masks and everything stored stay in the contiguous order).
//                   "auto": channels_last_on below. Evaluation and the batch-norm recompute run
//                   in the contiguous order.
//   sparse_kernels  sparse kernels for pruned linear and conv layers (CPU): "auto" (linear
//                   layers at or below sparse_density, convolutions at or below
//                   sparse_conv_density), "on" (every pruned layer) or "off"
#define SWAMP_CONFIG_FIELDS(X)           \
  X(std::string, model, "lenet_300_100") \
  X(std::string, method, "swamp")        \
  X(int64_t, particles, 4)               \
  X(int64_t, rounds, 5)                  \
  X(double, prune_ratio, 0.2)            \
  X(int64_t, epochs, 10)                 \
  X(int64_t, rewind_epochs, 1)           \
  X(int64_t, rewind_steps, -1)           \
  X(int64_t, batch_size, 128)            \
  X(double, lr, 0.1)                     \
  X(double, momentum, 0.9)               \
  X(bool, nesterov, false)               \
  X(double, weight_decay, 5e-4)          \
  X(std::string, schedule, "cosine")     \
  X(double, warmup_epochs, 0.0)          \
  X(double, swa_start, 0.75)             \
  X(double, swa_lr, 0.05)                \
  X(int, use_swa, -1)                    \
  X(int64_t, single_particle_rounds, 2)  \
  X(bool, keep_first_last_dense, false)  \
  X(std::string, pruning, "global")      \
  X(uint64_t, seed, 0)                   \
  X(std::string, device, "cpu")          \
  X(int64_t, eval_batch_size, 1000)      \
  X(int64_t, bn_batch_size, 0)           \
  X(bool, deterministic, false)          \
  X(bool, augment, false)                \
  X(int64_t, crop_padding, 4)            \
  X(bool, flip, true)                    \
  X(std::string, particle_mode, "auto")  \
  X(std::string, sparse_kernels, "auto") \
  X(double, sparse_density, 0.5)         \
  X(double, sparse_conv_density, 0.1)    \
  X(std::string, precision, "fp32")      \
  X(bool, diagnostics, true)             \
  X(std::string, channels_last, "auto")  \
  X(bool, sync_batchnorm, false)         \
  X(std::string, data_parallel, "auto")

struct Config {
#define SWAMP_CONFIG_MEMBER(type, name, value) type name = value;
  SWAMP_CONFIG_FIELDS(SWAMP_CONFIG_MEMBER)
#undef SWAMP_CONFIG_MEMBER
};

// Throws c10::ValueError naming the field ("Config.<field> ...") for anything out of range; the
// one place the configuration is checked (Python's Config calls it too). `check_model`: whether
// config.model must name a zoo model (not when the run is given its own model source).
SWAMP_API void validate_config(const Config& cfg, bool check_model = true);
// The device a run on `device` (Config.device's text) trains on, with its index resolved: "cpu",
// "cuda" -> the current CUDA device (cuda:N, as its tensors report it), "cuda:N" checked to
// exist. Throws c10::ValueError naming `who` and the device otherwise (no CUDA, bad text).
SWAMP_API c10::Device resolve_device(const std::string& device, const char* who = "Config.device");
// The seed the zoo model's initial weights θ_0 are drawn from in a run with `run_seed`
// (create_model(name, spec, initial_weights_seed(seed)) gives them).
SWAMP_API uint64_t initial_weights_seed(uint64_t run_seed);
// Particles and SWA used in round `round` by the configured method.
SWAMP_API int64_t particles_in_round(const Config& cfg, int64_t round);
// Whether round training uses SWA: Config::use_swa, or the method's default (off for imp).
SWAMP_API bool swa_enabled(const Config& cfg);
// How `particles` particles of a round train: config.particle_mode, or the auto rule for the
// device, `model` (one particle of the architecture) and the intra-op thread count.
SWAMP_API ParticlePath particle_path(const Config& cfg, const torch::nn::Module& model,
                                     int64_t particles);
// "stacked", "sequential" or "threads".
SWAMP_API const char* particle_path_name(ParticlePath path);
// The threads path: how many particles train at once (one thread each): the intra-op thread
// count, at most `particles`; 1 where this build cannot run particles concurrently.
SWAMP_API int64_t particle_lanes(int64_t particles);
// The threads path: particles stacked in each lane's model (the lanes' particles train as one
// stacked model each: models made of linear layers only, when the particles divide evenly over
// the lanes), else 1 (one model per particle).
SWAMP_API int64_t lane_stack(const torch::nn::Module& model, int64_t particles);

// Whether a run of `cfg` trains channels-last (Config::channels_last): "true" / "false" as given;
// "auto" on where it was measured to pay (benchmarks/precision.py, docs/guides/precision.md):
// models with a convolution (a 4-D parameter) in mixed precision, on a GPU or on a CPU with bf16
// instructions (AMX-BF16 / AVX512-BF16); off in fp32 and for models without convolutions.
SWAMP_API bool channels_last_on(const Config& cfg, const torch::nn::Module& model,
                                const c10::Device& device);

struct Progress {
  int64_t round = 0;
  int64_t particle = 0;  // -1: ticket
  int64_t particles = 1;
  int64_t epoch = 0;
  int64_t epochs = 0;
  double loss = 0.0;  // mean training loss of the epoch
  double lr = 0.0;
};

// The models of a finished round, for observers (tests of the method, analyses): copies on the
// CPU, parameter and buffer names as in the model.
struct RoundModels {
  int64_t round = 0;
  // Each particle's solution (its SWA average, or its last weights without SWA) with its
  // batch-norm statistics, as averaged.
  std::vector<std::map<std::string, at::Tensor>> particles;
  std::map<std::string, at::Tensor> average;  // the round's final model (masked, BN recomputed)
  std::map<std::string, at::Tensor> masks;    // the masks the round trained under
};

struct Hooks {
  std::function<void(const RoundResult&)> on_round;
  std::function<void(const Progress&)> on_epoch;
  // Called between training steps; may throw to stop the run (e.g. on Ctrl-C).
  std::function<void()> check_interrupt;
  // Called with the ticket (the rewind point) once it exists: trained, or restored on resume.
  std::function<void(const std::map<std::string, at::Tensor>&)> on_ticket;
  // Called after each round's evaluation, before the masks are pruned for the next round.
  // Copies the models: set it only when they are wanted.
  std::function<void(const RoundModels&)> on_models;
  // Whether on_models gets the particles too (false: RoundModels::particles stays empty).
  bool models_with_particles = true;
  // Called once at the start of a resumed run with the rounds completed before.
  std::function<void(const std::vector<RoundResult>&)> on_restore;
  // How often (in steps) the training losses are read back from the device: divergence is
  // still named at its exact step. 0: every step on the CPU, every 32 steps on a GPU (so that
  // the host does not wait for the device on every step).
  int64_t loss_sync_every = 0;
};

// The seams of a run, each an interface with implementations behind it: where the models come
// from (the zoo by default), where the batches come from, how the particles are averaged (the
// uniform average by default) and which processes train them (this one alone by default).
struct RunParts {
  std::shared_ptr<const ModelSource> model;    // null: the zoo model config.model
  std::shared_ptr<BatchSource> data;           // required
  std::shared_ptr<ParticleAverager> averager;  // null: UniformAverager
  std::shared_ptr<Processes> processes;        // null: one process (DistributedProcesses: more)
};

struct CheckpointOptions {
  std::string dir;           // empty: no checkpoints
  int64_t every_epochs = 1;  // also inside a particle's training, every this many epochs (0: never)
  // also every this many training steps inside a particle's training (0: never), resumed
  // mid-epoch: for epochs long enough that losing one to a kill matters
  int64_t every_steps = 0;
  bool fresh = false;  // ignore (and replace) an existing checkpoint
};

// What a run will do, decided once from its configuration and its model before anything
// trains: the configuration validated (each field named where out of range), the device
// resolved, the particles of each round, whether rounds use SWA, and what Config::channels_last
// resolves to. Python reads it instead of asking the core rule by rule.
struct RunPlan {
  std::vector<int64_t> particles;  // per round (particles_per_round)
  bool swa = false;                // swa_enabled
  bool channels_last = false;      // channels_last_on
  std::string precision = "fp32";  // Config::precision
  std::string device = "cpu";      // Config::device resolved (resolve_device): "cpu", "cuda:0"
  int64_t max_particles() const {
    int64_t n = 1;
    for (int64_t p : particles) n = p > n ? p : n;
    return n;
  }
};
// The plan of a run of `cfg` on `model` (a zoo model source for config.model, or your own) with
// data of `spec`. Throws c10::ValueError naming the field for a configuration out of range.
SWAMP_API RunPlan plan_run(const Config& cfg, const ModelSource& model, const ModelSpec& spec);
// Particles of each round of the configured method (particles_in_round for every round).
SWAMP_API std::vector<int64_t> particles_per_round(const Config& cfg);

// Everything a run is given, as one object: the configuration, its parts (seams), the hooks, the
// checkpoint options, and optionally its plan (from plan_run for this configuration and model;
// computed by run_imp when null).
struct RunRequest {
  Config config;
  RunParts parts;
  Hooks hooks;
  CheckpointOptions checkpoint;
  std::shared_ptr<const RunPlan> plan;
};

struct RunResult {
  Config config;
  RunPlan plan;                // what the run decided before training (see RunPlan)
  bool channels_last = false;  // what Config::channels_last resolved to (channels_last_on)
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
SWAMP_API RunResult run_imp(const Config& cfg, const RunParts& parts, const Hooks& hooks = {},
                            const CheckpointOptions& checkpoint = {});
// The same, given as one request (RunRequest).
SWAMP_API RunResult run_imp(const RunRequest& request);
// The same with the zoo model config.model on in-memory tensors (a TensorBatchSource with the
// config's augmentation), averaged uniformly, in this process.
SWAMP_API RunResult run_imp(const Config& cfg, const Dataset& data, const Hooks& hooks = {},
                            const CheckpointOptions& checkpoint = {});

// The configuration as (field, value) text pairs, in declaration order.
SWAMP_API std::vector<std::pair<std::string, std::string>> config_fields(const Config& cfg);

}  // namespace swamp
