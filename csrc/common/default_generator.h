// Keeps torch's default CPU generator as the caller left it: layers draw their initial weights
// from it when they are built, and a run must not move the caller's random stream. Optionally
// seeds it for the guarded scope (a module factory's θ_0). Internal to swamp_core.
#pragma once

#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <mutex>
#include <optional>

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

}  // namespace swamp
