// LeNet-5 (LeCun et al. 1998): conv 6@5x5 (padding 2), pool, conv 16@5x5, pool, 120-84 head.
#include <ATen/ops/max_pool2d.h>

#include "blocks.h"

namespace swamp::models {
namespace {
class LeNet5 : public Model {
 public:
  explicit LeNet5(const ModelSpec& spec) {
    require_image(spec, "lenet5", 12);  // 12x12 -> 6x6 -> 2x2 -> one 1x1 feature map
    const int64_t c = spec.input_shape[0], P = spec.particles;
    const int64_t h = ((spec.input_shape[1] / 2) - 4) / 2, w = ((spec.input_shape[2] / 2) - 4) / 2;
    conv1 = register_module("conv1", layers::conv2d(c, 6, 5, 1, 2, P, /*bias=*/true));
    conv2 = register_module("conv2", layers::conv2d(6, 16, 5, 1, 0, P, /*bias=*/true));
    fc1 = register_module("fc1", layers::Linear(16 * h * w, 120, P));
    fc2 = register_module("fc2", layers::Linear(120, 84, P));
    fc3 = register_module("fc3", layers::Linear(84, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = at::max_pool2d(conv1->forward(x).relu_(), {2, 2});
    h = at::max_pool2d(conv2->forward(h).relu_(), {2, 2});
    h = fc1->forward(layers::to_particle_major(h, fc1->particles())).relu_();
    h = fc2->forward(h).relu_();
    return layers::from_particle_major(fc3->forward(h));
  }

 private:
  layers::Conv2d conv1{nullptr}, conv2{nullptr};
  layers::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};
}  // namespace
SWAMP_REGISTER_MODEL("lenet5", LeNet5);
}  // namespace swamp::models
