#include "py_model_source.h"

#include <c10/util/Exception.h>

#include <sstream>

#include "structured.h"

namespace swamp::python {
namespace {

// One copy of the Python module (or N stacked, see swamp_ext/modules.py) as a Model: the C++
// tree holds the module's parameter and buffer tensors themselves under their dotted names, so
// the engine's SGD, SWA, averaging, masks and checkpoints act on what the Python forward reads.
class PyModel : public Model {
 public:
  explicit PyModel(py::object handle) {  // GIL held
    for (const auto& item : handle.attr("params")) {
      auto pair = item.cast<py::tuple>();
      auto name = pair[0].cast<std::string>();
      auto t = pair[1].cast<at::Tensor>();
      add(name, t, /*parameter=*/true);
      watched_.emplace_back(name, t);
    }
    for (const auto& item : handle.attr("buffers")) {
      auto pair = item.cast<py::tuple>();
      add(pair[0].cast<std::string>(), pair[1].cast<at::Tensor>(), /*parameter=*/false);
    }
    forward_ = handle.attr("forward");
    loss_ = handle.attr("loss");
    train_ = handle.attr("train");
    recompute_ = handle.attr("recompute_bn");
    statistics_ = py::getattr(handle, "batchnorm_statistics", py::none());
    handle_ = std::move(handle);
  }
  ~PyModel() override {
    py::gil_scoped_acquire gil;
    forward_ = py::object();
    loss_ = py::object();
    train_ = py::object();
    recompute_ = py::object();
    statistics_ = py::object();
    handle_ = py::object();
  }

  at::Tensor forward(const at::Tensor& x) override {
    py::gil_scoped_acquire gil;
    const auto before = versions();
    at::Tensor out = forward_(x).cast<at::Tensor>();
    check_unchanged(before);
    return out;
  }

  at::Tensor forward_inputs(const c10::IValue& inputs) override {
    py::gil_scoped_acquire gil;
    const auto before = versions();
    at::Tensor out = forward_(to_python(inputs)).cast<at::Tensor>();
    check_unchanged(before);
    return out;
  }

  at::Tensor training_loss_inputs(const c10::IValue& inputs, const at::Tensor& y) override {
    {
      py::gil_scoped_acquire gil;
      if (!loss_.is_none()) {
        const auto before = versions();
        at::Tensor loss = loss_(to_python(inputs), y, 1).cast<at::Tensor>();
        check_unchanged(before);
        return loss;
      }
    }
    return Model::training_loss_inputs(inputs, y);
  }

  at::Tensor training_loss(const at::Tensor& x, const at::Tensor& y, int64_t particles) override {
    {
      py::gil_scoped_acquire gil;
      if (!loss_.is_none()) {
        const auto before = versions();
        at::Tensor loss = loss_(x, y, particles).cast<at::Tensor>();
        check_unchanged(before);
        return loss;
      }
    }
    return Model::training_loss(x, y, particles);
  }

  void train(bool on) override {
    Model::train(on);
    py::gil_scoped_acquire gil;
    train_(on);
  }

  bool recompute_batchnorm(const std::function<void()>& forward_batches) override {
    py::gil_scoped_acquire gil;
    py::cpp_function feed([&forward_batches] {
      py::gil_scoped_release nogil;
      forward_batches();
    });
    return recompute_(feed).cast<bool>();
  }

  std::vector<at::Tensor> batchnorm_statistics() override {
    py::gil_scoped_acquire gil;
    if (statistics_.is_none()) return {};
    return statistics_().cast<std::vector<at::Tensor>>();
  }

 private:
  void add(const std::string& dotted, const at::Tensor& t, bool parameter) {
    torch::nn::Module* node = this;
    size_t start = 0;
    for (size_t dot = dotted.find('.'); dot != std::string::npos; dot = dotted.find('.', start)) {
      const std::string part = dotted.substr(start, dot - start);
      auto children = node->named_children();
      if (const auto* child = children.find(part)) {
        node = child->get();
      } else {
        node = node->register_module(part, std::make_shared<torch::nn::Module>()).get();
      }
      start = dot + 1;
    }
    const std::string leaf = dotted.substr(start);
    if (parameter)
      node->register_parameter(leaf, t, t.requires_grad());
    else
      node->register_buffer(leaf, t);
  }
  std::vector<int64_t> versions() const {
    std::vector<int64_t> v;
    v.reserve(watched_.size());
    for (const auto& w : watched_) v.push_back(static_cast<int64_t>(w.second._version()));
    return v;
  }
  void check_unchanged(const std::vector<int64_t>& before) const {
    for (size_t i = 0; i < watched_.size(); ++i)
      TORCH_CHECK_VALUE(
          static_cast<int64_t>(watched_[i].second._version()) == before[i],
          "the module changed its parameter '", watched_[i].first,
          "' in place during forward; swamp_ext owns the weights during a run (masked "
          "SGD, SWA, averaging): compute with parameters, do not modify them");
  }

  py::object handle_, forward_, loss_, train_, recompute_, statistics_;
  std::vector<std::pair<std::string, at::Tensor>> watched_;
};

}  // namespace

PyModuleSource::PyModuleSource(py::object adapter) : adapter_(std::move(adapter)) {
  stackable_ = adapter_.attr("stackable").cast<bool>();
  identity_ = adapter_.attr("identity").cast<std::string>();
  prunable_ = adapter_.attr("prunable_names").cast<std::vector<std::string>>();
}

PyModuleSource::~PyModuleSource() {
  py::gil_scoped_acquire gil;
  adapter_ = py::object();
}

ModelPtr PyModuleSource::create(const ModelSpec& spec,
                                uint64_t /*seed: θ_0 is the module's*/) const {
  py::gil_scoped_acquire gil;
  return std::make_shared<PyModel>(adapter_.attr("create")(spec.particles));
}

std::vector<std::string> PyModuleSource::prunable(const torch::nn::Module& /*model*/) const {
  return prunable_;
}

std::optional<ParticlePath> PyModuleSource::auto_path(const c10::Device& device,
                                                      int64_t particles) const {
  py::gil_scoped_acquire gil;
  py::object p = adapter_.attr("auto_path")(device.str(), particles);
  if (p.is_none()) return std::nullopt;
  const auto name = p.cast<std::string>();
  if (name == "stacked") return ParticlePath::kStacked;
  if (name == "threads") return ParticlePath::kThreads;
  TORCH_CHECK(name == "sequential", "auto_path: unknown path '", name, "'");
  return ParticlePath::kSequential;
}

}  // namespace swamp::python
