// Deterministic algorithms for the duration of a run (Config::deterministic); the global ATen
// settings come back afterwards. Internal to swamp_core.
#pragma once

#include <ATen/Context.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace swamp {

class DeterminismGuard {
 public:
  DeterminismGuard(bool on, const c10::Device& device) {
    if (!on) return;
    if (device.is_cuda()) {
      // cuBLAS reads its workspace setting once, when the process first uses it: it cannot be set
      // from here reliably, so a run asks for it up front.
      const char* ws = std::getenv("CUBLAS_WORKSPACE_CONFIG");
      const std::string v = ws == nullptr ? "" : ws;
      TORCH_CHECK_VALUE(v == ":4096:8" || v == ":16:8",
                        "Config.deterministic on CUDA needs the environment variable "
                        "CUBLAS_WORKSPACE_CONFIG=:4096:8 (or :16:8), set before the process "
                        "starts (e.g. `export CUBLAS_WORKSPACE_CONFIG=:4096:8`); it is '",
                        v, "'");
    }
    active_ = true;
    ctx_.setDeterministicAlgorithms(true, false);
    ctx_.setDeterministicCuDNN(true);
    ctx_.setBenchmarkCuDNN(false);
  }
  ~DeterminismGuard() {
    if (!active_) return;
    ctx_.setDeterministicAlgorithms(algos_, warn_);
    ctx_.setDeterministicCuDNN(cudnn_);
    ctx_.setBenchmarkCuDNN(bench_);
  }
  DeterminismGuard(const DeterminismGuard&) = delete;
  DeterminismGuard& operator=(const DeterminismGuard&) = delete;

 private:
  at::Context& ctx_ = at::globalContext();
  bool algos_ = ctx_.deterministicAlgorithms(), warn_ = ctx_.deterministicAlgorithmsWarnOnly();
  bool cudnn_ = ctx_.deterministicCuDNN(), bench_ = ctx_.benchmarkCuDNN();
  bool active_ = false;
};

}  // namespace swamp
