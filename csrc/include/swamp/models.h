// Models behind one interface, created by name from a registry (one file per model).
#pragma once

#include <ATen/core/ivalue.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "swamp/export.h"

namespace swamp {

// What a model needs to know about the data: the shape of one input (C, H, W or features) and the
// number of classes.
struct ModelSpec {
  std::vector<int64_t> input_shape;
  int64_t num_classes = 10;
  // > 1: one module holds this many particles, stacked (see swamp/layers.h); every input then has
  // the particles' channels side by side, [B, particles * C, ...], and so have the logits.
  int64_t particles = 1;
};

// Every model is a torch::nn::Module with a single-tensor forward that returns logits.
// Prunable parameters are, by convention, the conv and linear weights (parameters named
// "*weight" with at least 2 dimensions); biases and normalisation layers are never pruned.
// A model holding P particles (ModelSpec::particles) takes and returns the stacked layout of
// swamp/layers.h.
class SWAMP_API Model : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  // The training loss of one batch, one value per particle ([particles], each the mean over
  // its samples): `x` in the stacked layout, `y` the labels [particles * B], particle-major.
  // Default: cross-entropy of forward(x). Models with their own loss override it.
  virtual at::Tensor training_loss(const at::Tensor& x, const at::Tensor& y, int64_t particles);
  // Structured inputs (a tuple / list / dict of tensors, Batch::inputs), one particle per model.
  // Default: refused with a c10::ValueError (the zoo's models take one tensor); a Python module
  // takes a tuple as positional and a dict as keyword arguments.
  virtual at::Tensor forward_inputs(const c10::IValue& inputs);
  virtual at::Tensor training_loss_inputs(const c10::IValue& inputs, const at::Tensor& y);
  // Batch-norm running statistics recomputed for the current weights: reset, then the
  // cumulative average (not an EMA) over the batches `forward_batches` feeds through forward()
  // in train mode without gradients; momentum and mode restored afterwards. Returns false when
  // the model has no batch norm. Default: the torch::nn::BatchNorm{1,2,3}d modules in the tree
  // (recompute_batchnorm, swamp/averaging.h); models whose normalisation lives elsewhere (a
  // Python module) override it.
  virtual bool recompute_batchnorm(const std::function<void()>& forward_batches);
  // The tensors recompute_batchnorm recomputes, in a fixed order: every batch-norm layer's
  // running mean and variance, and its batch count (an integer tensor). Batch-norm statistics are
  // taken batch by batch from them (and so shared by the processes of a run); empty: none, or not
  // known (then recompute_batchnorm runs over all batches at once, in every process). Default:
  // those of the torch::nn::BatchNorm{1,2,3}d modules in the tree (batchnorm_statistics,
  // swamp/averaging.h).
  virtual std::vector<at::Tensor> batchnorm_statistics();
};
using ModelPtr = std::shared_ptr<Model>;
using ModelFactory = std::function<ModelPtr(const ModelSpec&)>;

// Registers a model under `name` (SWAMP_REGISTER_MODEL does it at load time); a second
// registration of a name replaces the first.
SWAMP_API void register_model(const std::string& name, ModelFactory factory);
// A family of models named by pattern (e.g. "wrn<depth>_<width>"): `resolve` returns a factory for
// names it understands and nullptr otherwise. `prefix` is how the family is listed in
// model_names().
using ModelResolver = std::function<ModelFactory(const std::string& name)>;
SWAMP_API void register_model_family(const std::string& prefix, ModelResolver resolve);
// The registered names, sorted (families are not listed); whether `name` resolves to a model
// (a registered name or a member of a family).
SWAMP_API std::vector<std::string> model_names();
SWAMP_API bool has_model(const std::string& name);
// Builds the model and initialises it from `seed` (kaiming normal for conv, PyTorch's default
// uniform for linear, batch norm weight 1 / bias 0). Throws c10::ValueError for unknown names.
SWAMP_API ModelPtr create_model(const std::string& name, const ModelSpec& spec, uint64_t seed);

// Names of the prunable parameters, in registration order.
SWAMP_API std::vector<std::string> prunable_parameter_names(const torch::nn::Module& model);
// Copies every parameter and buffer of `src` into `dst` (same architecture).
SWAMP_API void copy_state(const torch::nn::Module& src, torch::nn::Module& dst);
// Seeded initialisation (used by create_model).
SWAMP_API void init_parameters(torch::nn::Module& model, uint64_t seed);

struct ModelRegistration {
  ModelRegistration(const std::string& name, ModelFactory factory) {
    register_model(name, std::move(factory));
  }
};

}  // namespace swamp

#define SWAMP_REGISTER_MODEL(NAME, CLASS)                                   \
  static const ::swamp::ModelRegistration swamp_model_registration_##CLASS( \
      NAME, [](const ::swamp::ModelSpec& spec) -> ::swamp::ModelPtr {       \
        return std::make_shared<CLASS>(spec);                               \
      })
