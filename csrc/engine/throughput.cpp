#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <chrono>

#include "swamp/engine.h"
#include "swamp/models.h"
#include "swamp/optim.h"

namespace swamp {

double train_throughput(const std::string& name, const std::vector<int64_t>& input_shape,
                        int64_t num_classes, int64_t batch_size, int64_t steps,
                        const std::string& device) {
  TORCH_CHECK_VALUE(batch_size >= 1 && steps >= 1, "train_throughput: batch_size and steps >= 1");
  const c10::Device dev(device);
  TORCH_CHECK_VALUE(!dev.is_cuda() || at::hasCUDA(), "train_throughput: no CUDA device");
  ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
  model->to(dev);
  model->train(true);
  MaskedSGD opt(model->parameters(true), {}, SgdOptions{0.9, false, 5e-4});
  std::vector<int64_t> shape{batch_size};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  at::Tensor x = at::randn(shape, at::TensorOptions().device(dev));
  at::Tensor y =
      at::randint(0, num_classes, {batch_size}, at::TensorOptions().dtype(at::kLong).device(dev));
  auto step = [&] {
    opt.zero_grad();
    at::Tensor loss = at::cross_entropy_loss(model->forward(x), y);
    loss.backward();
    opt.step(0.01);
    return loss.item<double>();  // synchronises on CUDA
  };
  step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(batch_size * steps) / s;
}

}  // namespace swamp
