// Conv-6 of the lottery-ticket paper: 64-64 / 128-128 / 256-256 channels, 256-256 head, batch norm.
#include "blocks.h"

namespace swamp::models {
namespace {
struct Conv6 : ConvNet {
  explicit Conv6(const ModelSpec& s) : ConvNet(s, "conv6", {64, 128, 256}) {}
};
}  // namespace
SWAMP_REGISTER_MODEL("conv6", Conv6);
}  // namespace swamp::models
