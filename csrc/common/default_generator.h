// Keeps torch's default CPU generator as the caller left it: layers draw their initial weights
// from it when they are built, and a run must not move the caller's random stream. Optionally
// seeds it for the guarded scope (a module factory's θ_0). Internal to swamp_core.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace swamp {

class DefaultGeneratorGuard {
 public:
  explicit DefaultGeneratorGuard(std::optional<uint64_t> seed = std::nullopt)
      : gen_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    saved_ = gen_.get_state();
    if (seed) gen_.set_current_seed(*seed);
  }
  ~DefaultGeneratorGuard() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(saved_);
  }
  DefaultGeneratorGuard(const DefaultGeneratorGuard&) = delete;
  DefaultGeneratorGuard& operator=(const DefaultGeneratorGuard&) = delete;

 private:
  at::Generator gen_;
  at::Tensor saved_;
};

// Keeps torch's default generator of `device` (CPU, and CUDA for a CUDA device: the CPU one too)
// as the caller left it: a run's forward passes draw from them in the run's own streams.
class GeneratorStateGuard {
 public:
  explicit GeneratorStateGuard(const c10::Device& device) {
    keep(c10::Device(c10::kCPU));
    if (!device.is_cpu()) keep(device);
  }
  ~GeneratorStateGuard() {
    for (auto& [gen, state] : saved_) {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    }
  }
  GeneratorStateGuard(const GeneratorStateGuard&) = delete;
  GeneratorStateGuard& operator=(const GeneratorStateGuard&) = delete;

 private:
  void keep(const c10::Device& d) {
    at::Generator gen = at::globalContext().defaultGenerator(d);
    std::lock_guard<std::mutex> lock(gen.mutex());
    saved_.emplace_back(gen, gen.get_state());
  }
  std::vector<std::pair<at::Generator, at::Tensor>> saved_;
};

}  // namespace swamp
