#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "../common/exact_text.h"
#include "plan.h"
#include "swamp/engine.h"
#include "swamp/model_source.h"
#include "swamp/pruning.h"

namespace swamp {

void validate_config(const Config& c, bool check_model) {
  if (check_model) ZooModelSource{c.model};  // names the known models when it is unknown
  TORCH_CHECK_VALUE(
      c.method == "imp" || c.method == "imp_swa" || c.method == "swamp" || c.method == "swamp_plus",
      "Config.method must be one of imp, imp_swa, swamp, swamp_plus; got '", c.method, "'");
  TORCH_CHECK_VALUE(c.particles >= 1, "Config.particles must be >= 1, got ", c.particles);
  TORCH_CHECK_VALUE(c.rounds >= 1, "Config.rounds must be >= 1, got ", c.rounds);
  TORCH_CHECK_VALUE(std::isfinite(c.prune_ratio) && c.prune_ratio > 0.0 && c.prune_ratio < 1.0,
                    "Config.prune_ratio must be in (0, 1), got ", c.prune_ratio);
  TORCH_CHECK_VALUE(c.epochs >= 1, "Config.epochs must be >= 1, got ", c.epochs);
  TORCH_CHECK_VALUE(c.rewind_epochs >= 0 && c.rewind_epochs < c.epochs,
                    "Config.rewind_epochs must be in [0, epochs), got ", c.rewind_epochs);
  TORCH_CHECK_VALUE(c.rewind_steps >= -1, "Config.rewind_steps must be >= 0 (or -1: unset)");
  TORCH_CHECK_VALUE(c.batch_size >= 1, "Config.batch_size must be >= 1, got ", c.batch_size);
  TORCH_CHECK_VALUE(std::isfinite(c.lr) && c.lr > 0.0, "Config.lr must be > 0, got ", c.lr);
  TORCH_CHECK_VALUE(std::isfinite(c.momentum) && c.momentum >= 0.0 && c.momentum < 1.0,
                    "Config.momentum must be in [0, 1), got ", c.momentum);
  TORCH_CHECK_VALUE(!c.nesterov || c.momentum > 0.0, "Config.nesterov needs momentum > 0");
  TORCH_CHECK_VALUE(std::isfinite(c.weight_decay) && c.weight_decay >= 0.0,
                    "Config.weight_decay must be >= 0, got ", c.weight_decay);
  TORCH_CHECK_VALUE(c.schedule == "cosine" || c.schedule == "step" || c.schedule == "constant",
                    "Config.schedule must be cosine, step or constant; got '", c.schedule, "'");
  TORCH_CHECK_VALUE(std::isfinite(c.warmup_epochs) && c.warmup_epochs >= 0.0 &&
                        c.warmup_epochs < static_cast<double>(c.epochs),
                    "Config.warmup_epochs must be in [0, epochs), got ", c.warmup_epochs);
  TORCH_CHECK_VALUE(std::isfinite(c.swa_start) && c.swa_start > 0.0 && c.swa_start < 1.0,
                    "Config.swa_start must be in (0, 1), got ", c.swa_start);
  TORCH_CHECK_VALUE(std::isfinite(c.swa_lr) && c.swa_lr > 0.0, "Config.swa_lr must be > 0, got ",
                    c.swa_lr);
  if (swa_enabled(c)) {
    // SWA snapshots are epoch ends from floor(swa_start * epochs) on: at least one epoch must
    // train at the main learning rate, and warm-up must end before SWA starts.
    const int64_t start = engine::swa_start_epoch(c);
    TORCH_CHECK_VALUE(start >= 1, "Config.swa_start: SWA would start at epoch 0 (floor(swa_start ",
                      "* epochs) = floor(", c.swa_start, " * ", c.epochs,
                      ")), so the whole run would train at swa_lr; train more epochs, raise ",
                      "swa_start, or turn SWA off (use_swa=False)");
    TORCH_CHECK_VALUE(c.warmup_epochs <= static_cast<double>(start), "Config.warmup_epochs (",
                      c.warmup_epochs, ") must end before SWA starts (epoch ", start, ")");
  }
  TORCH_CHECK_VALUE(c.use_swa >= -1 && c.use_swa <= 1, "Config.use_swa must be -1, 0 or 1");
  TORCH_CHECK_VALUE(c.single_particle_rounds >= 0, "Config.single_particle_rounds must be >= 0");
  TORCH_CHECK_VALUE(c.eval_batch_size >= 1, "Config.eval_batch_size must be >= 1");
  TORCH_CHECK_VALUE(c.bn_batch_size >= 0, "Config.bn_batch_size must be >= 0");
  TORCH_CHECK_VALUE(c.crop_padding >= 0, "Config.crop_padding must be >= 0");
  TORCH_CHECK_VALUE(c.particle_mode == "auto" || c.particle_mode == "stacked" ||
                        c.particle_mode == "sequential" || c.particle_mode == "threads",
                    "Config.particle_mode must be auto, stacked, sequential or threads; got '",
                    c.particle_mode, "'");
  if (const auto nm = parse_nm(c.pruning)) {
    // one step a round from M:M (round 0) down to N:M: the last round must train at N:M
    TORCH_CHECK_VALUE(c.rounds - 1 >= nm->m - nm->n, "Config.pruning '", c.pruning,
                      "' steps down one weight per group of ", nm->m, " each round (", nm->m, ":",
                      nm->m, " in round 0, ", nm->n, ":", nm->m, " from round ", nm->m - nm->n,
                      " on): it needs rounds >= ", nm->m - nm->n + 1, ", got ", c.rounds);
  } else {
    TORCH_CHECK_VALUE(c.pruning == "global" || c.pruning == "layerwise" || c.pruning == "random",
                      "Config.pruning must be global, layerwise, random or an N:M pattern such as "
                      "2:4; got '",
                      c.pruning, "'");
  }
  TORCH_CHECK_VALUE(
      c.sparse_kernels == "auto" || c.sparse_kernels == "on" || c.sparse_kernels == "off",
      "Config.sparse_kernels must be auto, on or off; got '", c.sparse_kernels, "'");
  TORCH_CHECK_VALUE(
      std::isfinite(c.sparse_density) && c.sparse_density >= 0.0 && c.sparse_density <= 1.0,
      "Config.sparse_density must be in [0, 1], got ", c.sparse_density);
  TORCH_CHECK_VALUE(c.precision == "fp32" || c.precision == "bf16" || c.precision == "fp16",
                    "Config.precision must be fp32, bf16 or fp16; got '", c.precision, "'");
  TORCH_CHECK_VALUE(
      c.channels_last == "auto" || c.channels_last == "true" || c.channels_last == "false",
      "Config.channels_last must be auto, true or false; got '", c.channels_last, "'");
  TORCH_CHECK_VALUE(
      c.data_parallel == "auto" || c.data_parallel == "always" || c.data_parallel == "never",
      "Config.data_parallel must be auto, always or never; got '", c.data_parallel, "'");
  TORCH_CHECK_VALUE(std::isfinite(c.sparse_conv_density) && c.sparse_conv_density >= 0.0 &&
                        c.sparse_conv_density <= 1.0,
                    "Config.sparse_conv_density must be in [0, 1], got ", c.sparse_conv_density);
  try {
    c10::Device d(c.device);
    TORCH_CHECK_VALUE(d.is_cpu() || d.is_cuda(), "Config.device must be cpu or cuda");
    TORCH_CHECK_VALUE(c.particle_mode != "threads" || d.is_cpu(),
                      "Config.particle_mode: threads trains on the CPU only; on a GPU use auto, "
                      "stacked or sequential (device ",
                      c.device, ")");
  } catch (const c10::ValueError&) {
    throw;
  } catch (const c10::Error&) {
    TORCH_CHECK_VALUE(false, "Config.device: cannot parse '", c.device,
                      "' (expected cpu, cuda or cuda:N)");
  }
}

namespace {
// Whether the CPU has bf16 instructions (the flags Linux reports in /proc/cpuinfo; false where
// there is no such file).
bool cpu_has_native_bf16() {
  static const bool has = [] {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      line += ' ';
      return line.find(" amx_bf16 ") != std::string::npos ||
             line.find(" avx512_bf16 ") != std::string::npos;
    }
    return false;
  }();
  return has;
}
}  // namespace

bool channels_last_on(const Config& cfg, const torch::nn::Module& model,
                      const c10::Device& device) {
  if (cfg.channels_last != "auto") return cfg.channels_last == "true";
  bool conv = false;
  for (const auto& p : model.parameters(true)) conv = conv || p.dim() == 4;
  if (!conv || cfg.precision == "fp32") return false;
  if (device.is_cuda()) return true;
  return cfg.precision == "bf16" && cpu_has_native_bf16();
}

c10::Device resolve_device(const std::string& device, const char* who) {
  c10::Device d = c10::kCPU;
  try {
    d = c10::Device(device);
  } catch (const c10::Error&) {
    TORCH_CHECK_VALUE(false, who, ": cannot parse device '", device,
                      "' (expected cpu, cuda or cuda:N)");
  }
  TORCH_CHECK_VALUE(d.is_cpu() || d.is_cuda(), who, ": device must be cpu or cuda, got '", device,
                    "'");
  if (d.is_cpu()) return c10::Device(c10::kCPU);  // "cpu:0" is the CPU tensors report as "cpu"
  TORCH_CHECK_VALUE(at::hasCUDA(), who, ": device is '", device,
                    "' but this torch build has no usable CUDA device");
  const auto count = static_cast<int64_t>(at::getNumGPUs());
  // "cuda" is the current CUDA device: the device its tensors report (cuda:N)
  if (!d.has_index()) return at::empty({0}, at::TensorOptions().device(d)).device();
  TORCH_CHECK_VALUE(d.index() < count, who, ": device '", device, "' does not exist (", count,
                    " CUDA device", count == 1 ? "" : "s", ")");
  return d;
}

namespace {
std::string field_text(const std::string& v) { return v; }
std::string field_text(int64_t v) { return std::to_string(v); }
std::string field_text(uint64_t v) { return std::to_string(v); }
std::string field_text(int v) { return std::to_string(v); }
std::string field_text(bool v) { return v ? "1" : "0"; }
std::string field_text(double v) { return exact_text(v); }
}  // namespace

std::vector<std::pair<std::string, std::string>> config_fields(const Config& c) {
  std::vector<std::pair<std::string, std::string>> out;
#define SWAMP_CONFIG_TEXT(type, name, value) out.emplace_back(#name, field_text(c.name));
  SWAMP_CONFIG_FIELDS(SWAMP_CONFIG_TEXT)
#undef SWAMP_CONFIG_TEXT
  return out;
}

bool swa_enabled(const Config& c) {
  if (c.use_swa >= 0) return c.use_swa == 1;
  return c.method != "imp";
}

int64_t particles_in_round(const Config& c, int64_t round) {
  if (c.method == "imp" || c.method == "imp_swa") return 1;
  if (c.method == "swamp_plus" && round < c.single_particle_rounds) return 1;
  return c.particles;
}

}  // namespace swamp
