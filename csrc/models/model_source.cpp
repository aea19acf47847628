// ModelSource: the model seam (see swamp/model_source.h); the zoo behind it.
#include "swamp/model_source.h"

#include <c10/util/Exception.h>

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
