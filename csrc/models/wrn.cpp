// Wide ResNets (Zagoruyko & Komodakis 2016), the SWAMP paper's networks: WRN-d-k has a 16-channel
// 3x3 stem, three stages of (d - 4) / 6 pre-activation blocks at 16k / 32k / 64k channels
// (strides 1, 2, 2), a final BN + ReLU, global average pool and a linear layer; no dropout.
// Registered: wrn28_2, wrn16_4, wrn28_10; any "wrn<d>_<k>" with d = 6n + 4 is built on request.
#include <regex>

#include "blocks.h"

namespace swamp::models {
namespace {
class WideResNet : public Model {
 public:
  WideResNet(const ModelSpec& spec, int64_t depth, int64_t k) {
    TORCH_CHECK_VALUE(depth >= 10 && (depth - 4) % 6 == 0 && k >= 1,
                      "wrn: depth must be 6n + 4 (>= 10) and width >= 1, got depth ", depth,
                      " width ", k);
    require_image(spec, "wrn", 4);
    const int64_t n = (depth - 4) / 6, P = spec.particles;
    conv1 = register_module("conv1", conv(spec.input_shape[0], 16, 3, 1, 1, P));
    layer1 = register_module("layer1", make_stage<WideBlock>(16, 16 * k, n, 1, P));
    layer2 = register_module("layer2", make_stage<WideBlock>(16 * k, 32 * k, n, 2, P));
    layer3 = register_module("layer3", make_stage<WideBlock>(32 * k, 64 * k, n, 2, P));
    bn = register_module("bn", models::bn(64 * k, P));
    fc = register_module("fc", layers::Linear(64 * k, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = conv1->forward(x);
    h = run_stage<WideBlock>(layer1, h);
    h = run_stage<WideBlock>(layer2, h);
    h = run_stage<WideBlock>(layer3, h);
    return fc->forward(global_pool(bn->forward(h).relu_()));
  }

 private:
  layers::Conv2d conv1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  layers::BatchNorm2d bn{nullptr};
  layers::Linear fc{nullptr};
};

struct Registrations {
  Registrations() {
    const std::pair<const char*, std::pair<int64_t, int64_t>> named[] = {
        {"wrn28_2", {28, 2}}, {"wrn16_4", {16, 4}}, {"wrn28_10", {28, 10}}};
    for (const auto& kv : named) {
      const int64_t d = kv.second.first, k = kv.second.second;
      register_model(kv.first,
                     [d, k](const ModelSpec& s) { return std::make_shared<WideResNet>(s, d, k); });
    }
    register_model_family("wrn", [](const std::string& name) -> ModelFactory {
      static const std::regex pattern("wrn([0-9]+)_([0-9]+)");
      std::smatch m;
      if (!std::regex_match(name, m, pattern)) return nullptr;
      const int64_t d = std::stoll(m[1]), k = std::stoll(m[2]);
      return [d, k](const ModelSpec& s) { return std::make_shared<WideResNet>(s, d, k); };
    });
  }
};
const Registrations registrations;
}  // namespace
}  // namespace swamp::models
