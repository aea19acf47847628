// ResNet-18 (He et al. 2016): four stages of two basic blocks at 64 / 128 / 256 / 512 channels.
//   resnet18           CIFAR variant: 3x3 stride-1 stem, no max-pool (for 32x32 inputs)
//   resnet18_imagenet  ImageNet variant: 7x7 stride-2 stem and a 3x3 stride-2 max-pool
#include <ATen/ops/max_pool2d.h>

#include "blocks.h"

namespace swamp::models {
namespace {
class ResNet18 : public Model {
 public:
  ResNet18(const ModelSpec& spec, bool imagenet) : imagenet_(imagenet) {
    require_image(spec, imagenet ? "resnet18_imagenet" : "resnet18", imagenet ? 32 : 8);
    const int64_t P = spec.particles;
    conv1 = register_module("conv1", imagenet ? conv(spec.input_shape[0], 64, 7, 2, 3, P)
                                              : conv(spec.input_shape[0], 64, 3, 1, 1, P));
    bn1 = register_module("bn1", models::bn(64, P));
    layer1 = register_module("layer1", make_stage<BasicBlock>(64, 64, 2, 1, P));
    layer2 = register_module("layer2", make_stage<BasicBlock>(64, 128, 2, 2, P));
    layer3 = register_module("layer3", make_stage<BasicBlock>(128, 256, 2, 2, P));
    layer4 = register_module("layer4", make_stage<BasicBlock>(256, 512, 2, 2, P));
    fc = register_module("fc", layers::Linear(512, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = bn1->forward(conv1->forward(x)).relu_();
    if (imagenet_) h = at::max_pool2d(h, {3, 3}, {2, 2}, {1, 1});
    h = run_stage<BasicBlock>(layer1, h);
    h = run_stage<BasicBlock>(layer2, h);
    h = run_stage<BasicBlock>(layer3, h);
    h = run_stage<BasicBlock>(layer4, h);
    return fc->forward(global_pool(h));
  }

 private:
  bool imagenet_;
  layers::Conv2d conv1{nullptr};
  layers::BatchNorm2d bn1{nullptr};
  torch::nn::ModuleList layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  layers::Linear fc{nullptr};
};
struct ResNet18Cifar : ResNet18 {
  explicit ResNet18Cifar(const ModelSpec& s) : ResNet18(s, false) {}
};
struct ResNet18ImageNet : ResNet18 {
  explicit ResNet18ImageNet(const ModelSpec& s) : ResNet18(s, true) {}
};
}  // namespace
SWAMP_REGISTER_MODEL("resnet18", ResNet18Cifar);
SWAMP_REGISTER_MODEL("resnet18_imagenet", ResNet18ImageNet);
}  // namespace swamp::models
