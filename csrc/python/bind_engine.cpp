#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "py_batch_source.h"
#include "py_model_source.h"
#include "swamp/bench.h"
#include "swamp/checkpoint.h"
#include "swamp/distributed.h"
#include "swamp/engine.h"
#include "swamp/layers.h"
#include "swamp/model_source.h"
#include "swamp/models.h"

namespace swamp::python {

RunParts make_parts(const Config& cfg, const Dataset& data, const py::object& model,
                    const py::object& feeder, bool augment) {
  validate_config(cfg, /*check_model=*/model.is_none());
  RunParts parts;
  if (!model.is_none()) parts.model = std::make_shared<PyModuleSource>(model);
  Augment aug;
  if (augment && cfg.augment) aug = Augment{cfg.crop_padding, cfg.flip};
  const c10::Device dev = resolve_device(cfg.device);
  if (!feeder.is_none()) {
    parts.data = std::make_shared<PyBatchSource>(feeder, dev, aug);
  } else {
    py::gil_scoped_release nogil;
    parts.data = std::make_shared<TensorBatchSource>(data, dev, aug);
  }
  return parts;
}

void bind_engine(py::module_& m) {
  py::class_<Config> config(m, "Config",
                            "C++ run configuration (use swamp_ext.Config from Python)");
  config.def(py::init<>());
#define SWAMP_CONFIG_BIND(type, name, value) config.def_readwrite(#name, &Config::name);
  SWAMP_CONFIG_FIELDS(SWAMP_CONFIG_BIND)
#undef SWAMP_CONFIG_BIND
  m.def("config_fields", &config_fields, py::arg("config"),
        "The configuration as (field, text) pairs, in declaration order.");
  m.def("validate_config", &validate_config, py::arg("config"), py::arg("check_model") = true,
        "Raises ValueError naming the first field out of range (the one validation of a Config).");
  m.def(
      "validate_dataset",
      [](const at::Tensor& x_train, const at::Tensor& y_train, const at::Tensor& x_test,
         const at::Tensor& y_test, int64_t num_classes, std::vector<double> mean,
         std::vector<double> std, int64_t min_train) {
        Dataset data{x_train,     y_train,         x_test,        y_test,
                     num_classes, std::move(mean), std::move(std)};
        py::gil_scoped_release nogil;
        validate_dataset(data, min_train);
      },
      py::arg("x_train"), py::arg("y_train"), py::arg("x_test"), py::arg("y_test"),
      py::arg("num_classes"), py::arg("mean"), py::arg("std"), py::arg("min_train") = 1,
      "Raises ValueError / TypeError naming the offending field (the one validation of a "
      "dataset).");
  m.def(
      "ensure_writable_dir",
      [](const std::string& dir, const std::string& what) { ensure_writable_dir(dir, what); },
      py::arg("dir"), py::arg("what"),
      "Creates `dir` if needed; raises ValueError naming `what` when files cannot be written "
      "there.");

  m.def("data_parallel_groups", &data_parallel_groups, py::arg("world"), py::arg("particles"),
        "The ranks that train each particle of a round of `particles` on `world` processes.");

  // the round record: every field of SWAMP_ROUND_FIELDS, and the list itself (Python builds its
  // RoundRecord, results.json and the strict reader from it)
  py::class_<RoundResult> round_result(m, "RoundResult");
  round_result.def(py::init<>());
#define SWAMP_ROUND_BIND(kind, name, init, lo, hi, required, doc) \
  round_result.def_readonly(#name, &RoundResult::name, doc);
  SWAMP_ROUND_FIELDS(SWAMP_ROUND_BIND)
#undef SWAMP_ROUND_BIND
  m.def(
      "round_fields",
      [] {
        py::list out;
        for (const RoundField& f : round_fields())
          out.append(py::dict(py::arg("kind") = f.kind, py::arg("name") = f.name,
                              py::arg("lo") = f.lo, py::arg("hi") = f.hi,
                              py::arg("required") = f.required, py::arg("doc") = f.doc));
        return out;
      },
      "The round record's fields (SWAMP_ROUND_FIELDS): kind, name, bounds, whether records of "
      "earlier versions have it, meaning.");

  py::class_<Progress>(m, "Progress")
      .def_readonly("round", &Progress::round)
      .def_readonly("particle", &Progress::particle)
      .def_readonly("particles", &Progress::particles)
      .def_readonly("epoch", &Progress::epoch)
      .def_readonly("epochs", &Progress::epochs)
      .def_readonly("loss", &Progress::loss)
      .def_readonly("lr", &Progress::lr);

  auto models = m.def_submodule("models", "Model registry of the core");
  models.def("names", &model_names);
  models.def(
      "particle_path",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         int64_t particles, const std::string& mode, const std::string& device) {
        Config c;
        c.model = name;
        c.particle_mode = mode;
        c.device = device;
        validate_config(c);
        ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
        return std::string(particle_path_name(particle_path(c, *model, particles)));
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("particles"),
      py::arg("mode") = "auto", py::arg("device") = "cpu",
      "How `particles` particles of this model train in a round under particle_mode `mode`: "
      "'stacked', 'sequential' or 'threads' (auto: the rule for this device and thread count).");
  models.def(
      "lane_stack",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         int64_t particles) {
        ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
        return lane_stack(*model, particles);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("particles"),
      "The threads path: particles stacked in each lane's model (1: one model per particle).");
  models.def("particle_lanes", &particle_lanes, py::arg("particles"),
             "Particles the threads path trains at once (one thread each) here.");
  models.def("has", &has_model, py::arg("name"));
  models.def(
      "train_throughput",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         int64_t batch_size, int64_t steps, const std::string& device) {
        py::gil_scoped_release nogil;
        return train_throughput(name, input_shape, num_classes, batch_size, steps, device);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("batch_size"),
      py::arg("steps"), py::arg("device") = "cpu");
  models.def(
      "train_step_seconds",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         int64_t batch_size, int64_t particles, bool stacked, double sparsity,
         const std::string& sparse_kernels, double sparse_density, double sparse_conv_density,
         int64_t steps, int64_t repeats, const std::string& device, bool threads,
         const std::string& prune) {
        StepBenchOptions o{
            name,    input_shape, num_classes,    batch_size,     particles,
            stacked, sparsity,    sparse_kernels, sparse_density, sparse_conv_density,
            steps,   repeats,     device,         threads,        prune};
        py::gil_scoped_release nogil;
        return train_step_seconds(o);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("batch_size") = 128,
      py::arg("particles") = 1, py::arg("stacked") = true, py::arg("sparsity") = 0.0,
      py::arg("sparse_kernels") = "off", py::arg("sparse_density") = 0.5,
      py::arg("sparse_conv_density") = 0.1, py::arg("steps") = 20, py::arg("repeats") = 5,
      py::arg("device") = "cpu", py::arg("threads") = false, py::arg("prune") = "global",
      "Seconds per training step of pruned, possibly stacked / sparse particles; stacked=False, "
      "threads=True: one model per particle, side by side, one thread each.");
  models.def(
      "create",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         uint64_t seed) {
        ModelPtr model =
            create_model(name, ModelSpec{input_shape, num_classes}, initial_weights_seed(seed));
        py::dict state;
        for (const auto& item : model->named_parameters(true))
          state[py::str(item.key())] = item.value().detach();
        for (const auto& item : model->named_buffers(true))
          state[py::str(item.key())] = item.value().detach();
        py::list prunable;
        for (const auto& n : prunable_parameter_names(*model)) prunable.append(n);
        return py::make_tuple(state, prunable);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("seed") = 0,
      "Builds a model with the initial weights a run with `seed` starts from; returns "
      "(state_dict, prunable parameter names).");
  models.def(
      "forward",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         const std::map<std::string, at::Tensor>& state, const at::Tensor& x) {
        ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
        // the model runs where the input lies, in its floating dtype (float64 references)
        if (x.is_floating_point())
          model->to(x.device(), x.scalar_type());
        else
          model->to(x.device());
        {
          torch::NoGradGuard no_grad;
          auto params = model->named_parameters(true);
          auto buffers = model->named_buffers(true);
          for (auto& item : params) {
            auto it = state.find(item.key());
            TORCH_CHECK_VALUE(it != state.end(), "state is missing '", item.key(), "'");
            item.value().copy_(it->second);
          }
          for (auto& item : buffers) {
            auto it = state.find(item.key());
            if (it != state.end()) item.value().copy_(it->second);
          }
        }
        model->eval();
        torch::NoGradGuard no_grad;
        return model->forward(x);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("state"),
      py::arg("x"),
      "Evaluation-mode forward of a C++ model with the given weights, on x's device.");
}

}  // namespace swamp::python
