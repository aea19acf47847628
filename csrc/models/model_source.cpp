// ModelSource: the model seam (see swamp/model_source.h); the zoo behind it.
#include "swamp/model_source.h"

#include <c10/util/Exception.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <optional>

#include "../common/default_generator.h"
#include "swamp/layers.h"
#include "swamp/module_source.h"

namespace swamp {

std::vector<std::string> ModelSource::prunable(const torch::nn::Module& model) const {
  return prunable_parameter_names(model);
}

ZooModelSource::ZooModelSource(std::string name) : name_(std::move(name)) {
  if (has_model(name_)) return;
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  TORCH_CHECK_VALUE(false, "Config.model: unknown model '", name_, "'; known models: ", known);
}

ModelPtr ZooModelSource::create(const ModelSpec& spec, uint64_t seed) const {
  return create_model(name_, spec, seed);
}

}  // namespace swamp

// ---- a user's torch::nn::Module (swamp/module_source.h) ----------------------------------------
namespace swamp {

ModuleModel::ModuleModel(std::shared_ptr<torch::nn::Module> module, Forward forward)
    : module_(std::move(module)), forward_(std::move(forward)) {
  TORCH_CHECK_VALUE(module_ != nullptr, "module_source: the factory returned no module");
  // The module's own tensors and submodules, under their own names (no prefix).
  for (const auto& item : module_->named_parameters(/*recurse=*/false))
    register_parameter(item.key(), item.value(), item.value().requires_grad());
  for (const auto& item : module_->named_buffers(/*recurse=*/false))
    register_buffer(item.key(), item.value());
  for (const auto& item : module_->named_children()) register_module(item.key(), item.value());
}

at::Tensor ModuleModel::forward(const at::Tensor& x) { return forward_(x); }

void ModuleModel::train(bool on) {
  Model::train(on);
  module_->train(on);  // the user's forward may ask its own module
}

ModuleSource::ModuleSource(std::string name, Make make, ModuleSourceOptions options)
    : name_(std::move(name)), make_(std::move(make)), options_(std::move(options)) {
  TORCH_CHECK_VALUE(make_ != nullptr, "module_source: no factory");
}

std::shared_ptr<ModuleModel> ModuleSource::make_model() const {
  auto made = make_();
  return std::make_shared<ModuleModel>(std::move(made.first), std::move(made.second));
}

namespace {
void check_module(const torch::nn::Module& m, const std::string& who) {
  std::optional<c10::Device> device;
  for (const auto& item : m.named_parameters(true)) {
    const at::Tensor& p = item.value();
    TORCH_CHECK_TYPE(at::isFloatingType(p.scalar_type()), who, ": parameter '", item.key(), "' is ",
                     p.scalar_type(), "; parameters must be floating point");
    if (!device) device = p.device();
    TORCH_CHECK_VALUE(p.device() == *device, who, ": parameters on several devices ('", item.key(),
                      "' on ", p.device(), ", others on ", *device, ")");
  }
}
}  // namespace

ModelPtr ModuleSource::create(const ModelSpec& spec, uint64_t seed) const {
  TORCH_CHECK_VALUE(spec.particles == 1, "module_source '", name_,
                    "': a C++ module holds one particle");
  std::lock_guard<std::mutex> lock(mutex_);
  if (!theta0_) {
    {
      DefaultGeneratorGuard seeded(seed);  // θ_0 from the seed; the caller's stream kept
      theta0_ = make_model();
    }
    check_module(*theta0_, "module '" + name_ + "'");
    TORCH_CHECK_VALUE(!prunable(*theta0_).empty(), "module '", name_,
                      "' has no prunable parameter (the weights of Conv and Linear layers by "
                      "default; choose them with ModuleSourceOptions::prunable)");
  }
  auto model = make_model();
  const std::string arch_error = "module '" + name_ +
                                 "': the factory made modules with different parameters; it "
                                 "must make the same architecture every time";
  TORCH_CHECK_VALUE(
      model->named_parameters(true).size() == theta0_->named_parameters(true).size() &&
          model->named_buffers(true).size() == theta0_->named_buffers(true).size(),
      arch_error);
  auto dp = model->named_parameters(true);
  for (const auto& item : theta0_->named_parameters(true)) {
    const at::Tensor* d = dp.find(item.key());
    TORCH_CHECK_VALUE(d != nullptr && d->sizes() == item.value().sizes(), arch_error);
  }
  copy_state(*theta0_, *model);
  return model;
}

std::vector<std::string> ModuleSource::prunable(const torch::nn::Module& model) const {
  std::vector<std::string> names;
  if (options_.prunable) {
    for (const auto& item : model.named_parameters(true))
      if (options_.prunable(item.key(), item.value())) names.push_back(item.key());
    return names;
  }
  for (const auto& item : model.named_modules("", /*include_self=*/true)) {
    const auto& m = item.value();
    const bool layer = m->as<torch::nn::Conv1d>() || m->as<torch::nn::Conv2d>() ||
                       m->as<torch::nn::Conv3d>() || m->as<torch::nn::ConvTranspose1d>() ||
                       m->as<torch::nn::ConvTranspose2d>() || m->as<torch::nn::ConvTranspose3d>() ||
                       m->as<torch::nn::Linear>() || m->as<layers::LinearImpl>();
    if (!layer) continue;
    const at::Tensor* w = m->named_parameters(false).find("weight");
    if (w != nullptr && w->requires_grad())
      names.push_back(item.key().empty() ? "weight" : item.key() + ".weight");
  }
  return names;
}

}  // namespace swamp
