// Conv-2 of the lottery-ticket paper: 64-64 channels, pool, 256-256 head, with batch norm.
#include "blocks.h"

namespace swamp::models {
namespace {
struct Conv2 : ConvNet {
  explicit Conv2(const ModelSpec& s) : ConvNet(s, "conv2", {64}) {}
};
}  // namespace
SWAMP_REGISTER_MODEL("conv2", Conv2);
}  // namespace swamp::models
