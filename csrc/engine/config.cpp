#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/conv.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "../common/lanes.h"
#include "swamp/engine.h"
#include "swamp/models.h"

namespace swamp {

void validate_config(const Config& c) {
  TORCH_CHECK_VALUE(has_model(c.model), "config.model: unknown model '", c.model, "'");
  TORCH_CHECK_VALUE(
      c.method == "imp" || c.method == "imp_swa" || c.method == "swamp" || c.method == "swamp_plus",
      "config.method must be one of imp, imp_swa, swamp, swamp_plus; got '", c.method, "'");
  TORCH_CHECK_VALUE(c.particles >= 1, "config.particles must be >= 1, got ", c.particles);
  TORCH_CHECK_VALUE(c.rounds >= 1, "config.rounds must be >= 1, got ", c.rounds);
  TORCH_CHECK_VALUE(std::isfinite(c.prune_ratio) && c.prune_ratio > 0.0 && c.prune_ratio < 1.0,
                    "config.prune_ratio must be in (0, 1), got ", c.prune_ratio);
  TORCH_CHECK_VALUE(c.epochs >= 1, "config.epochs must be >= 1, got ", c.epochs);
  TORCH_CHECK_VALUE(c.rewind_epochs >= 0 && c.rewind_epochs < c.epochs,
                    "config.rewind_epochs must be in [0, epochs), got ", c.rewind_epochs);
  TORCH_CHECK_VALUE(c.rewind_steps >= -1, "config.rewind_steps must be >= 0 (or -1: unset)");
  TORCH_CHECK_VALUE(c.batch_size >= 1, "config.batch_size must be >= 1, got ", c.batch_size);
  TORCH_CHECK_VALUE(std::isfinite(c.lr) && c.lr > 0.0, "config.lr must be > 0, got ", c.lr);
  TORCH_CHECK_VALUE(std::isfinite(c.momentum) && c.momentum >= 0.0 && c.momentum < 1.0,
                    "config.momentum must be in [0, 1), got ", c.momentum);
  TORCH_CHECK_VALUE(!c.nesterov || c.momentum > 0.0, "config.nesterov needs momentum > 0");
  TORCH_CHECK_VALUE(std::isfinite(c.weight_decay) && c.weight_decay >= 0.0,
                    "config.weight_decay must be >= 0, got ", c.weight_decay);
  TORCH_CHECK_VALUE(c.schedule == "cosine" || c.schedule == "step" || c.schedule == "constant",
                    "config.schedule must be cosine, step or constant; got '", c.schedule, "'");
  TORCH_CHECK_VALUE(std::isfinite(c.warmup_epochs) && c.warmup_epochs >= 0.0 &&
                        c.warmup_epochs < static_cast<double>(c.epochs),
                    "config.warmup_epochs must be in [0, epochs), got ", c.warmup_epochs);
  TORCH_CHECK_VALUE(std::isfinite(c.swa_start) && c.swa_start > 0.0 && c.swa_start < 1.0,
                    "config.swa_start must be in (0, 1), got ", c.swa_start);
  TORCH_CHECK_VALUE(std::isfinite(c.swa_lr) && c.swa_lr > 0.0, "config.swa_lr must be > 0, got ",
                    c.swa_lr);
  TORCH_CHECK_VALUE(c.use_swa >= -1 && c.use_swa <= 1, "config.use_swa must be -1, 0 or 1");
  TORCH_CHECK_VALUE(c.single_particle_rounds >= 0, "config.single_particle_rounds must be >= 0");
  TORCH_CHECK_VALUE(c.eval_batch_size >= 1, "config.eval_batch_size must be >= 1");
  TORCH_CHECK_VALUE(c.bn_batch_size >= 0, "config.bn_batch_size must be >= 0");
  TORCH_CHECK_VALUE(c.crop_padding >= 0, "config.crop_padding must be >= 0");
  TORCH_CHECK_VALUE(c.particle_mode == "auto" || c.particle_mode == "stacked" ||
                        c.particle_mode == "sequential" || c.particle_mode == "threads",
                    "config.particle_mode must be auto, stacked, sequential or threads; got '",
                    c.particle_mode, "'");
  TORCH_CHECK_VALUE(
      c.sparse_kernels == "auto" || c.sparse_kernels == "on" || c.sparse_kernels == "off",
      "config.sparse_kernels must be auto, on or off; got '", c.sparse_kernels, "'");
  TORCH_CHECK_VALUE(
      std::isfinite(c.sparse_density) && c.sparse_density >= 0.0 && c.sparse_density <= 1.0,
      "config.sparse_density must be in [0, 1], got ", c.sparse_density);
  try {
    c10::Device d(c.device);
    TORCH_CHECK_VALUE(d.is_cpu() || d.is_cuda(), "config.device must be cpu or cuda");
    TORCH_CHECK_VALUE(c.particle_mode != "threads" || d.is_cpu(),
                      "config.particle_mode threads trains on the CPU only; on a GPU use auto, "
                      "stacked or sequential (device ",
                      c.device, ")");
  } catch (const c10::ValueError&) {
    throw;
  } catch (const c10::Error&) {
    TORCH_CHECK_VALUE(false, "config.device: cannot parse '", c.device,
                      "' (expected cpu, cuda or cuda:N)");
  }
}

std::vector<std::pair<std::string, std::string>> config_fields(const Config& c) {
  auto num = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return std::string(buf);
  };
  auto i = [](int64_t v) { return std::to_string(v); };
  return {{"model", c.model},
          {"method", c.method},
          {"particles", i(c.particles)},
          {"rounds", i(c.rounds)},
          {"prune_ratio", num(c.prune_ratio)},
          {"epochs", i(c.epochs)},
          {"rewind_epochs", i(c.rewind_epochs)},
          {"rewind_steps", i(c.rewind_steps)},
          {"batch_size", i(c.batch_size)},
          {"lr", num(c.lr)},
          {"momentum", num(c.momentum)},
          {"nesterov", i(c.nesterov)},
          {"weight_decay", num(c.weight_decay)},
          {"schedule", c.schedule},
          {"warmup_epochs", num(c.warmup_epochs)},
          {"swa_start", num(c.swa_start)},
          {"swa_lr", num(c.swa_lr)},
          {"use_swa", i(c.use_swa)},
          {"single_particle_rounds", i(c.single_particle_rounds)},
          {"keep_first_last_dense", i(c.keep_first_last_dense)},
          {"seed", std::to_string(c.seed)},
          {"device", c.device},
          {"eval_batch_size", i(c.eval_batch_size)},
          {"bn_batch_size", i(c.bn_batch_size)},
          {"deterministic", i(c.deterministic)},
          {"augment", i(c.augment)},
          {"crop_padding", i(c.crop_padding)},
          {"flip", i(c.flip)},
          {"particle_mode", c.particle_mode},
          {"sparse_kernels", c.sparse_kernels},
          {"sparse_density", num(c.sparse_density)}};
}

bool swa_enabled(const Config& c) {
  if (c.use_swa >= 0) return c.use_swa == 1;
  return c.method != "imp";
}

namespace {
bool has_convolutions(const torch::nn::Module& model) {
  for (const auto& m : model.modules(/*include_self=*/true))
    if (m->as<torch::nn::Conv2d>() || m->as<torch::nn::Conv1d>() || m->as<torch::nn::Conv3d>())
      return true;
  return false;
}
}  // namespace

int64_t lane_stack(const torch::nn::Module& model, int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "lane_stack: particles must be >= 1, got ", particles);
  const int64_t lanes = particle_lanes(particles);
  // Grouped convolutions are slow on the CPU (benchmarks/stacked_step.py): conv models keep one
  // model per particle.
  if (particles % lanes != 0 || has_convolutions(model)) return 1;
  return particles / lanes;
}

int64_t particle_lanes(int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "particle_lanes: particles must be >= 1, got ", particles);
  if (!lanes_concurrent()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(particles, at::get_num_threads()));
}

ParticlePath particle_path(const Config& c, const torch::nn::Module& model, int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "particle_path: particles must be >= 1, got ", particles);
  if (c.particle_mode == "stacked") return ParticlePath::kStacked;
  if (c.particle_mode == "sequential") return ParticlePath::kSequential;
  if (c.particle_mode == "threads") return ParticlePath::kThreads;
  if (particles <= 1) return ParticlePath::kSequential;  // nothing to train side by side
  // On a GPU, where one small model leaves the device mostly idle, the particles run stacked.
  if (!c10::Device(c.device).is_cpu()) return ParticlePath::kStacked;
  // Measured on a 2-core CPU (benchmarks/stacked_step.py, 4 particles): one thread a lane is
  // never slower than the other paths (lenet_300_100, a stacked model per lane: 0.95-0.98x the
  // stacked step from dense to 98% sparse; lenet5 / conv4_small / conv2 / resnet20, a model per
  // particle: 0.92-0.97x the sequential one): a small model leaves a two-thread pool idle, a
  // single thread runs its kernels at nearly full speed. It needs the particles to spread evenly
  // over the threads (each thread gets the same number).
  const int64_t threads = at::get_num_threads();
  if (threads > 1 && particles % threads == 0 && lanes_concurrent()) return ParticlePath::kThreads;
  // Otherwise models made of linear layers train faster stacked (lenet_300_100 1.2-1.3x dense,
  // 1.4x at 95% sparsity: batched matmuls, particle-major activations), models with convolutions
  // slower (0.4-0.66x: CPU grouped convolutions).
  return has_convolutions(model) ? ParticlePath::kSequential : ParticlePath::kStacked;
}

const char* particle_path_name(ParticlePath path) {
  switch (path) {
    case ParticlePath::kStacked:
      return "stacked";
    case ParticlePath::kThreads:
      return "threads";
    case ParticlePath::kSequential:
      break;
  }
  return "sequential";
}

int64_t particles_in_round(const Config& c, int64_t round) {
  if (c.method == "imp" || c.method == "imp_swa") return 1;
  if (c.method == "swamp_plus" && round < c.single_particle_rounds) return 1;
  return c.particles;
}

}  // namespace swamp
