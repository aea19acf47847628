// CIFAR ResNets (He et al. 2016, section 4.2): a 3x3 16-channel stem, three stages of n basic
// blocks at 16 / 32 / 64 channels (strides 1, 2, 2), global average pool, linear. Depth 6n + 2.
#include "blocks.h"

namespace swamp::models {
namespace {
class ResNetCifar : public Model {
 public:
  ResNetCifar(const ModelSpec& spec, const char* name, int64_t depth) {
    require_image(spec, name, 4);
    const int64_t n = (depth - 2) / 6, P = spec.particles;
    conv1 = register_module("conv1", conv(spec.input_shape[0], 16, 3, 1, 1, P));
    bn1 = register_module("bn1", models::bn(16, P));
    layer1 = register_module("layer1", make_stage<BasicBlock>(16, 16, n, 1, P));
    layer2 = register_module("layer2", make_stage<BasicBlock>(16, 32, n, 2, P));
    layer3 = register_module("layer3", make_stage<BasicBlock>(32, 64, n, 2, P));
    fc = register_module("fc", layers::Linear(64, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = bn1->forward(conv1->forward(x)).relu_();
    h = run_stage<BasicBlock>(layer1, h);
    h = run_stage<BasicBlock>(layer2, h);
    h = run_stage<BasicBlock>(layer3, h);
    return fc->forward(global_pool(h));
  }

 private:
  layers::Conv2d conv1{nullptr};
  layers::BatchNorm2d bn1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  layers::Linear fc{nullptr};
};
struct ResNet20 : ResNetCifar {
  explicit ResNet20(const ModelSpec& s) : ResNetCifar(s, "resnet20", 20) {}
};
struct ResNet32 : ResNetCifar {
  explicit ResNet32(const ModelSpec& s) : ResNetCifar(s, "resnet32", 32) {}
};
struct ResNet56 : ResNetCifar {
  explicit ResNet56(const ModelSpec& s) : ResNetCifar(s, "resnet56", 56) {}
};
}  // namespace
SWAMP_REGISTER_MODEL("resnet20", ResNet20);
SWAMP_REGISTER_MODEL("resnet32", ResNet32);
SWAMP_REGISTER_MODEL("resnet56", ResNet56);
}  // namespace swamp::models
