#include "swamp/version.h"

namespace swamp {
std::string version() { return SWAMP_VERSION; }
std::string built_with_torch_version() { return SWAMP_TORCH_VERSION; }
}  // namespace swamp
