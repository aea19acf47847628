// Mixed precision for a scope (Config::precision): torch's autocast switched on for one device
// type and dtype in the calling thread, as it was afterwards. Autocast is thread-local: every
// thread that runs a forward pass (each lane of the threads path) holds its own guard. A Python
// forward called from the guarded thread runs under the same autocast. Internal to swamp_core.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

namespace swamp {

// The autocast dtype of a Config::precision ("fp32": none).
inline std::optional<at::ScalarType> autocast_dtype(const std::string& precision) {
  if (precision == "bf16") return at::kBFloat16;
  if (precision == "fp16") return at::kHalf;
  TORCH_CHECK_VALUE(precision == "fp32", "precision must be fp32, bf16 or fp16; got '", precision,
                    "'");
  return std::nullopt;
}

class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType type, std::optional<at::ScalarType> dtype) : type_(type) {
    if (!dtype) return;
    active_ = true;
    enabled_ = at::autocast::is_autocast_enabled(type_);
    dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, *dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    // the cast weights are cached for the outermost region only (they change every step)
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, enabled_);
    at::autocast::set_autocast_dtype(type_, dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool active_ = false, enabled_ = false;
  at::ScalarType dtype_ = at::kFloat;
};

}  // namespace swamp
