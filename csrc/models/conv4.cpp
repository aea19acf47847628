// Conv-4 of the lottery-ticket paper (two conv-conv-pool blocks and a 3-layer MLP head), with batch
// norm, scaled for small inputs such as 28x28 digits: 32-32 / 64-64 channels, 256-256 head.
#include <c10/util/Exception.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/options/conv.h>

#include "swamp/models.h"

namespace swamp {
namespace {

class Conv4 : public Model {
 public:
  explicit Conv4(const ModelSpec& spec) {
    TORCH_CHECK_VALUE(spec.input_shape.size() == 3,
                      "conv4 needs image inputs shaped (channels, height, width)");
    const int64_t c = spec.input_shape[0], h = spec.input_shape[1], w = spec.input_shape[2];
    TORCH_CHECK_VALUE(h >= 4 && w >= 4, "conv4 needs images of at least 4x4 pixels, got ", h, "x",
                      w);
    const int64_t widths[4] = {32, 32, 64, 64};
    int64_t in = c;
    for (int i = 0; i < 4; ++i) {
      convs.push_back(register_module(
          "conv" + std::to_string(i + 1),
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in, widths[i], 3).padding(1).bias(false))));
      bns.push_back(
          register_module("bn" + std::to_string(i + 1), torch::nn::BatchNorm2d(widths[i])));
      in = widths[i];
    }
    const int64_t flat = in * (h / 2 / 2) * (w / 2 / 2);
    fc1 = register_module("fc1", torch::nn::Linear(flat, 256));
    fc2 = register_module("fc2", torch::nn::Linear(256, 256));
    fc3 = register_module("fc3", torch::nn::Linear(256, spec.num_classes));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = x;
    for (size_t i = 0; i < convs.size(); ++i) {
      h = bns[i]->forward(convs[i]->forward(h)).relu_();
      if (i % 2 == 1) h = at::max_pool2d(h, {2, 2});
    }
    h = h.flatten(1);
    h = fc1->forward(h).relu_();
    h = fc2->forward(h).relu_();
    return fc3->forward(h);
  }

 private:
  std::vector<torch::nn::Conv2d> convs;
  std::vector<torch::nn::BatchNorm2d> bns;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

}  // namespace
SWAMP_REGISTER_MODEL("conv4", Conv4);
}  // namespace swamp
