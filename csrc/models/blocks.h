// Building blocks shared by the model files (internal header).
#pragma once

#include <ATen/ops/adaptive_avg_pool2d.h>
#include <ATen/ops/max_pool2d.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/options/conv.h>

#include <string>
#include <vector>

#include "swamp/layers.h"
#include "swamp/models.h"

namespace swamp::models {

// A bias-free convolution and a batch norm for `P` stacked particles.
inline layers::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad,
                           int64_t P) {
  return layers::conv2d(in, out, k, stride, pad, P);
}
inline layers::BatchNorm2d bn(int64_t channels, int64_t P) {
  return layers::batchnorm(channels, P);
}

inline void require_image(const ModelSpec& spec, const char* model, int64_t min_hw) {
  TORCH_CHECK_VALUE(spec.input_shape.size() == 3, model,
                    " needs image inputs shaped (channels, height, width), got ",
                    spec.input_shape.size(), " dimensions");
  TORCH_CHECK_VALUE(spec.input_shape[1] >= min_hw && spec.input_shape[2] >= min_hw, model,
                    " needs images of at least ", min_hw, "x", min_hw, " pixels, got ",
                    spec.input_shape[1], "x", spec.input_shape[2]);
}

// Post-activation residual block of the CIFAR ResNets and ResNet-18 (He et al. 2016), with a
// 1x1 convolution + batch norm on the shortcut when the shape changes.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride, int64_t P) {
    conv1 = register_module("conv1", conv(in, out, 3, stride, 1, P));
    bn1 = register_module("bn1", bn(out, P));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1, P));
    bn2 = register_module("bn2", bn(out, P));
    if (stride != 1 || in != out) {
      shortcut_conv = register_module("shortcut_conv", conv(in, out, 1, stride, 0, P));
      shortcut_bn = register_module("shortcut_bn", bn(out, P));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = bn1->forward(conv1->forward(x)).relu_();
    h = bn2->forward(conv2->forward(h));
    at::Tensor s = shortcut_conv ? shortcut_bn->forward(shortcut_conv->forward(x)) : x;
    return (h + s).relu_();
  }

 private:
  layers::Conv2d conv1{nullptr}, conv2{nullptr}, shortcut_conv{nullptr};
  layers::BatchNorm2d bn1{nullptr}, bn2{nullptr}, shortcut_bn{nullptr};
};
TORCH_MODULE(BasicBlock);

// Pre-activation block of Wide ResNets (Zagoruyko & Komodakis 2016), no dropout.
class WideBlockImpl : public torch::nn::Module {
 public:
  WideBlockImpl(int64_t in, int64_t out, int64_t stride, int64_t P) {
    bn1 = register_module("bn1", bn(in, P));
    conv1 = register_module("conv1", conv(in, out, 3, stride, 1, P));
    bn2 = register_module("bn2", bn(out, P));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1, P));
    if (stride != 1 || in != out)
      shortcut_conv = register_module("shortcut_conv", conv(in, out, 1, stride, 0, P));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor o = bn1->forward(x).relu();
    at::Tensor h = conv1->forward(o);
    h = conv2->forward(bn2->forward(h).relu_());
    return h + (shortcut_conv ? shortcut_conv->forward(o) : x);
  }

 private:
  layers::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  layers::Conv2d conv1{nullptr}, conv2{nullptr}, shortcut_conv{nullptr};
};
TORCH_MODULE(WideBlock);

// A stage of residual blocks: the first may change the width and stride.
template <typename Block>
torch::nn::ModuleList make_stage(int64_t in, int64_t out, int64_t blocks, int64_t stride,
                                 int64_t P) {
  torch::nn::ModuleList stage;
  for (int64_t i = 0; i < blocks; ++i)
    stage->push_back(Block(i == 0 ? in : out, out, i == 0 ? stride : 1, P));
  return stage;
}

template <typename Block>
at::Tensor run_stage(const torch::nn::ModuleList& stage, at::Tensor x) {
  for (const auto& m : *stage) x = m->as<typename Block::Impl>()->forward(x);
  return x;
}

inline at::Tensor global_pool(const at::Tensor& x) {
  return at::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
}

}  // namespace swamp::models

namespace swamp::models {

// The lottery-ticket paper's Conv-2/4/6 (Frankle & Carbin 2019): blocks of two 3x3 convolutions
// (each followed by batch norm and ReLU) and a 2x2 max-pool, then a 256-256 MLP head.
class ConvNet : public Model {
 public:
  ConvNet(const ModelSpec& spec, const char* name, const std::vector<int64_t>& block_widths) {
    require_image(spec, name, 1 << block_widths.size());
    const int64_t P = spec.particles;
    int64_t in = spec.input_shape[0], h = spec.input_shape[1], w = spec.input_shape[2];
    int i = 0;
    for (int64_t width : block_widths) {
      for (int j = 0; j < 2; ++j, ++i) {
        convs.push_back(
            register_module("conv" + std::to_string(i + 1), conv(in, width, 3, 1, 1, P)));
        bns.push_back(register_module("bn" + std::to_string(i + 1), bn(width, P)));
        in = width;
      }
      h /= 2;
      w /= 2;
    }
    fc1 = register_module("fc1", layers::Linear(in * h * w, 256, P));
    fc2 = register_module("fc2", layers::Linear(256, 256, P));
    fc3 = register_module("fc3", layers::Linear(256, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = x;
    for (size_t i = 0; i < convs.size(); ++i) {
      h = bns[i]->forward(convs[i]->forward(h)).relu_();
      if (i % 2 == 1) h = at::max_pool2d(h, {2, 2});
    }
    h = fc1->forward(layers::to_particle_major(h, fc1->particles())).relu_();
    h = fc2->forward(h).relu_();
    return layers::from_particle_major(fc3->forward(h));
  }

 private:
  std::vector<layers::Conv2d> convs;
  std::vector<layers::BatchNorm2d> bns;
  layers::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

}  // namespace swamp::models
