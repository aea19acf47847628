// VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2015), CIFAR variant as in the
// lottery-ticket literature: 3x3 convolutions + BN + ReLU, 2x2 max-pools (skipped once the
// feature map is 1x1), global average pool and one linear layer.
#include <ATen/ops/max_pool2d.h>

#include "blocks.h"

namespace swamp::models {
namespace {
constexpr int64_t M = -1;  // max-pool
class VGG : public Model {
 public:
  VGG(const ModelSpec& spec, const char* name, const std::vector<int64_t>& plan) {
    require_image(spec, name, 1);
    const int64_t P = spec.particles;
    int64_t in = spec.input_shape[0], hw = std::min(spec.input_shape[1], spec.input_shape[2]);
    for (int64_t v : plan) {
      if (v == M) {
        if (hw >= 2) {  // pools after the last convolution; none once the map is 1x1
          pools_.back() += 1;
          hw /= 2;
        }
        continue;
      }
      const std::string i = std::to_string(convs.size() + 1);
      convs.push_back(register_module("conv" + i, conv(in, v, 3, 1, 1, P)));
      bns.push_back(register_module("bn" + i, models::bn(v, P)));
      pools_.push_back(0);
      in = v;
    }
    fc = register_module("fc", layers::Linear(in, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = x;
    for (size_t i = 0; i < convs.size(); ++i) {
      h = bns[i]->forward(convs[i]->forward(h)).relu_();
      for (int p = 0; p < pools_[i]; ++p) h = at::max_pool2d(h, {2, 2});
    }
    return fc->forward(global_pool(h));
  }

 private:
  std::vector<layers::Conv2d> convs;
  std::vector<layers::BatchNorm2d> bns;
  layers::Linear fc{nullptr};
  std::vector<int> pools_;  // max-pools after each convolution
};
struct VGG11 : VGG {
  explicit VGG11(const ModelSpec& s)
      : VGG(s, "vgg11", {64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}) {}
};
struct VGG13 : VGG {
  explicit VGG13(const ModelSpec& s)
      : VGG(s, "vgg13", {64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}) {}
};
struct VGG16 : VGG {
  explicit VGG16(const ModelSpec& s)
      : VGG(s, "vgg16",
            {64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M}) {}
};
struct VGG19 : VGG {
  explicit VGG19(const ModelSpec& s)
      : VGG(s, "vgg19", {64,  64,  M,   128, 128, M,   256, 256, 256, 256, M,
                         512, 512, 512, 512, M,   512, 512, 512, 512, M}) {}
};
}  // namespace
SWAMP_REGISTER_MODEL("vgg11", VGG11);
SWAMP_REGISTER_MODEL("vgg13", VGG13);
SWAMP_REGISTER_MODEL("vgg16", VGG16);
SWAMP_REGISTER_MODEL("vgg19", VGG19);
}  // namespace swamp::models
