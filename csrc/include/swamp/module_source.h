// Your own torch::nn::Module as the run's model: a ModelSource around a factory of any module
// with a `forward(at::Tensor) -> at::Tensor` returning logits (a custom Module subclass, a
// torch::nn::Sequential, any ModuleHolder):
//
//   struct NetImpl : torch::nn::Module { ... at::Tensor forward(const at::Tensor& x); };
//   TORCH_MODULE(Net);
//   auto source = swamp::module_source("net", [] { return Net(); });
//   swamp::RunParts parts{source, data};
//   swamp::RunResult r = swamp::run_imp(cfg, parts);   // r.state / r.masks: the module's names
//
// The factory is called once for θ_0, with torch's default CPU generator seeded from the run's
// seed (its state is restored afterwards), so a run is reproducible; every further copy the run
// needs (ticket, particles, average) is made by the factory and loaded with θ_0. The module keeps
// its own parameter names; parameters with requires_grad=false are not trained. Particles train
// one after the other or side by side on threads (a C++ module cannot be stacked).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "swamp/export.h"
#include "swamp/model_source.h"

namespace swamp {

// A user module behind the Model interface: its parameters, buffers and submodules under their
// own names; forward() calls the module's forward.
class SWAMP_API ModuleModel : public Model {
 public:
  using Forward = std::function<at::Tensor(const at::Tensor&)>;
  ModuleModel(std::shared_ptr<torch::nn::Module> module, Forward forward);
  at::Tensor forward(const at::Tensor& x) override;
  void train(bool on = true) override;
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  Forward forward_;
};

struct ModuleSourceOptions {
  // Which parameters are pruned: null: the weights of Conv1d/2d/3d, ConvTranspose1d/2d/3d and
  // Linear modules (norms, biases and embeddings stay dense, as in the zoo).
  std::function<bool(const std::string& name, const at::Tensor& param)> prunable;
};

class SWAMP_API ModuleSource : public ModelSource {
 public:
  // A new module and its forward, as made by the user's factory.
  using Make = std::function<std::pair<std::shared_ptr<torch::nn::Module>, ModuleModel::Forward>()>;
  ModuleSource(std::string name, Make make, ModuleSourceOptions options = {});

  // spec.particles must be 1 (not stackable). Checks the module: floating parameters on one
  // device, at least one prunable parameter.
  ModelPtr create(const ModelSpec& spec, uint64_t seed) const override;
  bool stackable() const override { return false; }
  std::vector<std::string> prunable(const torch::nn::Module& model) const override;
  std::string identity() const override { return "cpp:" + name_; }

 private:
  std::shared_ptr<ModuleModel> make_model() const;

  std::string name_;
  Make make_;
  ModuleSourceOptions options_;
  mutable std::mutex mutex_;
  mutable std::shared_ptr<ModuleModel> theta0_;  // the first module made: θ_0
};

namespace detail {
template <class T, class = void>
struct is_holder : std::false_type {};
template <class T>
struct is_holder<T, std::void_t<decltype(std::declval<T&>().ptr())>> : std::true_type {};
}  // namespace detail

// A ModuleSource from `factory`, returning a std::shared_ptr<M> or a ModuleHolder (Net,
// torch::nn::Sequential) whose module has forward(at::Tensor) -> at::Tensor.
template <class Factory>
std::shared_ptr<ModuleSource> module_source(std::string name, Factory factory,
                                            ModuleSourceOptions options = {}) {
  ModuleSource::Make make = [factory]() {
    auto made = factory();
    auto ptr = [&] {
      if constexpr (detail::is_holder<decltype(made)>::value)
        return made.ptr();
      else
        return made;
    }();
    auto* raw = ptr.get();
    ModuleModel::Forward fwd = [raw](const at::Tensor& x) -> at::Tensor { return raw->forward(x); };
    return std::make_pair(std::static_pointer_cast<torch::nn::Module>(ptr), std::move(fwd));
  };
  return std::make_shared<ModuleSource>(std::move(name), std::move(make), std::move(options));
}

}  // namespace swamp
