// Stacked particles: convolution and batch-norm layers holding N particles, and the layout
// helpers between per-particle and stacked tensors (see swamp/layers.h).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include "swamp/layers.h"

namespace swamp::layers {

Conv2d conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
              int64_t particles, bool bias) {
  TORCH_CHECK_VALUE(particles >= 1, "conv2d: particles must be >= 1, got ", particles);
  return Conv2d(torch::nn::Conv2dOptions(in * particles, out * particles, kernel)
                    .stride(stride)
                    .padding(padding)
                    .groups(particles)
                    .bias(bias),
                particles);
}

BatchNorm2d batchnorm(int64_t channels, int64_t particles) {
  TORCH_CHECK_VALUE(particles >= 1, "batchnorm: particles must be >= 1, got ", particles);
  return BatchNorm2d(channels * particles);
}

at::Tensor stack_inputs(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 3, "stack_inputs: expected [N, B, C, ...], got ", x.sizes());
  std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
  shape[1] *= x.size(0);
  return x.transpose(0, 1).reshape(shape);
}

at::Tensor repeat_input(const at::Tensor& x, int64_t particles) {
  if (particles == 1) return x;
  std::vector<int64_t> reps(static_cast<size_t>(x.dim()), 1);
  reps[1] = particles;
  return x.repeat(reps);
}

at::Tensor to_particle_major(const at::Tensor& x, int64_t particles) {
  if (particles == 1) return x.flatten(1);
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.size(1) % particles == 0, "to_particle_major: expected [B, ",
                    particles, "*C, ...], got ", x.sizes());
  // no copy at all when x is a particle-major tensor seen as stacked (stack_inputs of
  // single-channel images)
  return x.reshape({x.size(0), particles, -1}).transpose(0, 1).contiguous();
}

at::Tensor from_particle_major(const at::Tensor& y) {
  if (y.dim() == 2) return y;
  TORCH_CHECK_VALUE(y.dim() == 3, "from_particle_major: expected [N, B, F], got ", y.sizes());
  return y.transpose(0, 1).reshape({y.size(1), y.size(0) * y.size(2)});
}

at::Tensor split_outputs(const at::Tensor& y, int64_t particles) {
  return y.view({y.size(0), particles, -1}).transpose(0, 1);
}

at::Tensor particle_slice(const at::Tensor& t, int64_t particles, int64_t n) {
  if (t.dim() == 0 || particles == 1) return t;
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[0] /= particles;
  shape.insert(shape.begin(), particles);
  return t.view(shape).select(0, n);
}

}  // namespace swamp::layers
