// What every model does by default: cross-entropy training loss and the batch-norm recompute of
// the torch::nn layers in its tree (see swamp/models.h).
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include "swamp/averaging.h"
#include "swamp/layers.h"
#include "swamp/models.h"

namespace swamp {

at::Tensor Model::training_loss(const at::Tensor& x, const at::Tensor& y, int64_t particles) {
  if (particles == 1) return at::cross_entropy_loss(forward(x), y).reshape({1});
  const at::Tensor logits = layers::split_outputs(forward(x), particles);  // [P, B, K]
  const int64_t batch = logits.size(1);
  const at::Tensor ce = at::cross_entropy_loss(logits.reshape({particles * batch, -1}), y,
                                               /*weight=*/{}, at::Reduction::None);
  return ce.view({particles, batch}).mean(1);
}

at::Tensor Model::forward_inputs(const c10::IValue& inputs) {
  if (inputs.isTensor()) return forward(inputs.toTensor());
  TORCH_CHECK_VALUE(false, "the model (", name(), ") takes one input tensor; the data gives ",
                    inputs.tagKind(), " inputs: use a model that takes them (run_imp(model=...))");
}

at::Tensor Model::training_loss_inputs(const c10::IValue& inputs, const at::Tensor& y) {
  return at::cross_entropy_loss(forward_inputs(inputs), y).reshape({1});
}

bool Model::recompute_batchnorm(const std::function<void()>& forward_batches) {
  return swamp::recompute_batchnorm(*this, forward_batches);
}

std::vector<at::Tensor> Model::batchnorm_statistics() { return swamp::batchnorm_statistics(*this); }

}  // namespace swamp
