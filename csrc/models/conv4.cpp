// Conv-4 of the lottery-ticket paper: 64-64 / 128-128 channels, 256-256 head, with batch norm.
// conv4_small: the same at half width (32-32 / 64-64), cheap enough for CPU runs on 28x28 digits.
#include "blocks.h"

namespace swamp::models {
namespace {
struct Conv4 : ConvNet {
  explicit Conv4(const ModelSpec& s) : ConvNet(s, "conv4", {64, 128}) {}
};
struct Conv4Small : ConvNet {
  explicit Conv4Small(const ModelSpec& s) : ConvNet(s, "conv4_small", {32, 64}) {}
};
}  // namespace
SWAMP_REGISTER_MODEL("conv4", Conv4);
SWAMP_REGISTER_MODEL("conv4_small", Conv4Small);
}  // namespace swamp::models
