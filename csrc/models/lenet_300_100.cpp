// LeNet-300-100 (LeCun et al. 1998; the lottery-ticket paper's MLP): 300 and 100 hidden units.
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/linear.h>

#include "swamp/layers.h"
#include "swamp/models.h"

namespace swamp {
namespace {

class LeNet300100 : public Model {
 public:
  explicit LeNet300100(const ModelSpec& spec) {
    const int64_t P = spec.particles;
    int64_t in = 1;
    for (int64_t d : spec.input_shape) in *= d;
    fc1 = register_module("fc1", layers::Linear(in, 300, P));
    fc2 = register_module("fc2", layers::Linear(300, 100, P));
    fc3 = register_module("fc3", layers::Linear(100, spec.num_classes, P));
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = layers::to_particle_major(x, fc1->particles());
    h = fc1->forward(h).relu_();
    h = fc2->forward(h).relu_();
    return layers::from_particle_major(fc3->forward(h));
  }

 private:
  layers::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

}  // namespace
SWAMP_REGISTER_MODEL("lenet_300_100", LeNet300100);
}  // namespace swamp
