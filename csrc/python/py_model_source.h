// A Python torch.nn.Module behind the model seam (bindings only: the core library stays free of
// Python). The Python side (swamp_ext/modules.py, `_ModuleAdapter`) makes the copies of the
// user's module; the C++ model holds the very same parameter and buffer tensors (shared
// storage, nothing copied per step) under the module's own names, and every forward runs the
// module's Python forward as written.
#pragma once

#include "bindings.h"
#include "swamp/model_source.h"

namespace swamp::python {

class PyModuleSource : public ModelSource {
 public:
  // `adapter`: a swamp_ext.modules._ModuleAdapter.
  explicit PyModuleSource(py::object adapter);
  ~PyModuleSource() override;

  ModelPtr create(const ModelSpec& spec, uint64_t seed) const override;
  bool stackable() const override { return stackable_; }
  std::vector<std::string> prunable(const torch::nn::Module& model) const override;
  std::string identity() const override { return identity_; }
  std::optional<ParticlePath> auto_path(const c10::Device& device,
                                        int64_t particles) const override;

 private:
  py::object adapter_;
  bool stackable_ = false;
  std::string identity_;
  std::vector<std::string> prunable_;
};

}  // namespace swamp::python
