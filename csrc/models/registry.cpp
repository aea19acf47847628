#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <map>
#include <mutex>

#include "../common/default_generator.h"
#include "swamp/models.h"

namespace swamp {
namespace {
std::map<std::string, ModelFactory>& registry() {
  static std::map<std::string, ModelFactory> r;
  return r;
}
std::map<std::string, ModelResolver>& families() {
  static std::map<std::string, ModelResolver> f;
  return f;
}
ModelFactory resolve_family(const std::string& name) {
  for (const auto& kv : families()) {
    if (name.rfind(kv.first, 0) != 0) continue;
    if (ModelFactory f = kv.second(name)) return f;
  }
  return nullptr;
}
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

void register_model(const std::string& name, ModelFactory factory) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(factory);
}

void register_model_family(const std::string& prefix, ModelResolver resolve) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  families()[prefix] = std::move(resolve);
}

std::vector<std::string> model_names() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

bool has_model(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return registry().count(name) > 0 || resolve_family(name) != nullptr;
}

ModelPtr create_model(const std::string& name, const ModelSpec& spec, uint64_t seed) {
  ModelFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    if (it != registry().end()) factory = it->second;
    if (!factory) factory = resolve_family(name);
    if (!factory) {
      std::string known;
      for (const auto& kv : registry()) known += (known.empty() ? "" : ", ") + kv.first;
      TORCH_CHECK_VALUE(false, "unknown model '", name, "'; known models: ", known,
                        " (and wrn<depth>_<width>)");
    }
  }
  TORCH_CHECK_VALUE(!spec.input_shape.empty(), "model '", name, "': empty input shape");
  for (int64_t d : spec.input_shape)
    TORCH_CHECK_VALUE(d > 0, "model '", name, "': input shape entries must be positive");
  TORCH_CHECK_VALUE(spec.num_classes >= 2, "model '", name, "': needs at least 2 classes, got ",
                    spec.num_classes);
  DefaultGeneratorGuard keep;  // the layers' own initialisation draws from it
  ModelPtr model = factory(spec);
  init_parameters(*model, seed);
  return model;
}

std::vector<std::string> prunable_parameter_names(const torch::nn::Module& model) {
  std::vector<std::string> names;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& n = item.key();
    const bool is_weight = n == "weight" || (n.size() > 7 && n.substr(n.size() - 7) == ".weight");
    if (is_weight && item.value().dim() >= 2) names.push_back(n);
  }
  return names;
}

void copy_state(const torch::nn::Module& src, torch::nn::Module& dst) {
  torch::NoGradGuard no_grad;
  auto sp = src.named_parameters(true);
  auto dp = dst.named_parameters(true);
  TORCH_CHECK(sp.size() == dp.size(), "copy_state: models differ in their parameters");
  for (const auto& item : sp) dp[item.key()].copy_(item.value());
  auto sb = src.named_buffers(true);
  auto db = dst.named_buffers(true);
  TORCH_CHECK(sb.size() == db.size(), "copy_state: models differ in their buffers");
  for (const auto& item : sb) db[item.key()].copy_(item.value());
}

void init_parameters(torch::nn::Module& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto fan_in_of = [](const at::Tensor& w) {
    int64_t f = 1;
    for (int64_t d = 1; d < w.dim(); ++d) f *= w.size(d);
    return f;
  };
  // Initialise on the CPU with our generator, whatever the device: results do not depend on it.
  auto fill = [&](at::Tensor& t, auto&& draw) {
    at::Tensor cpu = at::empty(t.sizes(), t.options().device(at::kCPU).dtype(at::kFloat));
    draw(cpu);
    t.copy_(cpu);
  };
  for (const auto& m : model.modules(/*include_self=*/true)) {
    if (auto lin = std::dynamic_pointer_cast<torch::nn::LinearImpl>(m)) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in_of(lin->weight)));
      fill(lin->weight, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen); });
      if (lin->bias.defined())
        fill(lin->bias, [&](at::Tensor& c) { c.uniform_(-bound, bound, gen); });
    } else if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(m)) {
      const double std = std::sqrt(2.0 / static_cast<double>(fan_in_of(conv->weight)));
      fill(conv->weight, [&](at::Tensor& c) { c.normal_(0.0, std, gen); });
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto bn2 = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) {
      if (bn2->weight.defined()) bn2->weight.fill_(1.0);
      if (bn2->bias.defined()) bn2->bias.zero_();
    } else if (auto bn1 = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(m)) {
      if (bn1->weight.defined()) bn1->weight.fill_(1.0);
      if (bn1->bias.defined()) bn1->bias.zero_();
    }
  }
}

}  // namespace swamp
