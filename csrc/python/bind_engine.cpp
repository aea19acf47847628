#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "py_batch_source.h"
#include "py_model_source.h"
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

  m.def("particles_in_round", &particles_in_round, py::arg("config"), py::arg("round"),
        "Particles the configured method trains in `round`.");
  m.def("data_parallel_groups", &data_parallel_groups, py::arg("world"), py::arg("particles"),
        "The ranks that train each particle of a round of `particles` on `world` processes.");

  py::class_<RoundResult>(m, "RoundResult")
      .def_readonly("round", &RoundResult::round)
      .def_readonly("particles", &RoundResult::particles)
      .def_readonly("sparsity", &RoundResult::sparsity)
      .def_readonly("sparsity_all", &RoundResult::sparsity_all)
      .def_readonly("remaining", &RoundResult::remaining)
      .def_readonly("prunable", &RoundResult::prunable)
      .def_readonly("test_acc", &RoundResult::test_acc)
      .def_readonly("test_nll", &RoundResult::test_nll)
      .def_readonly("ensemble_acc", &RoundResult::ensemble_acc)
      .def_readonly("ensemble_nll", &RoundResult::ensemble_nll)
      .def_readonly("test_ece", &RoundResult::test_ece)
      .def_readonly("ensemble_ece", &RoundResult::ensemble_ece)
      .def_readonly("particle_acc", &RoundResult::particle_acc)
      .def_readonly("particle_nll", &RoundResult::particle_nll)
      .def_readonly("layer_density", &RoundResult::layer_density)
      .def_readonly("train_loss", &RoundResult::train_loss)
      .def_readonly("skipped_steps", &RoundResult::skipped_steps)
      .def_readonly("processes", &RoundResult::processes)
      .def_readonly("processes_per_particle", &RoundResult::processes_per_particle)
      .def_readonly("seconds", &RoundResult::seconds);

  py::class_<Progress>(m, "Progress")
      .def_readonly("round", &Progress::round)
      .def_readonly("particle", &Progress::particle)
      .def_readonly("particles", &Progress::particles)
      .def_readonly("epoch", &Progress::epoch)
      .def_readonly("epochs", &Progress::epochs)
      .def_readonly("loss", &Progress::loss)
      .def_readonly("lr", &Progress::lr);

  m.def(
      "run_imp",
      [](const Config& cfg, const at::Tensor& x_train, const at::Tensor& y_train,
         const at::Tensor& x_test, const at::Tensor& y_test, int64_t num_classes,
         std::vector<double> mean, std::vector<double> std,
         std::function<void(const RoundResult&)> on_round,
         std::function<void(const Progress&)> on_epoch,
         std::function<void(const std::vector<RoundResult>&)> on_restore,
         const std::string& checkpoint_dir, int64_t checkpoint_every, bool fresh,
         int64_t loss_sync_every,
         std::function<void(const std::map<std::string, at::Tensor>&)> on_ticket,
         std::function<void(int64_t, const std::vector<std::map<std::string, at::Tensor>>&,
                            const std::map<std::string, at::Tensor>&,
                            const std::map<std::string, at::Tensor>&)>
             on_models,
         const py::object& model, const py::object& feeder, const std::string& process_group,
         double dist_timeout_s, bool models_with_particles,
         const std::vector<std::pair<std::vector<int64_t>, std::string>>& subgroups) {
        Dataset data{x_train,     y_train,         x_test,        y_test,
                     num_classes, std::move(mean), std::move(std)};
        RunParts parts;
        if (!model.is_none() || !feeder.is_none() || !process_group.empty())
          parts = make_parts(cfg, data, model, feeder, /*augment=*/true);
        if (!process_group.empty()) {
          TORCH_CHECK_VALUE(dist_timeout_s > 0, "dist_timeout must be > 0 seconds, got ",
                            dist_timeout_s);
          parts.averager = std::make_shared<DistributedAverager>(process_group_collectives(
              process_group,
              std::chrono::milliseconds(static_cast<int64_t>(dist_timeout_s * 1000.0)), subgroups));
        }
        Hooks hooks;
        hooks.on_round = std::move(on_round);
        hooks.on_epoch = std::move(on_epoch);
        hooks.on_restore = std::move(on_restore);
        hooks.loss_sync_every = loss_sync_every;
        hooks.on_ticket = std::move(on_ticket);
        hooks.models_with_particles = models_with_particles;
        if (on_models)
          hooks.on_models = [on_models](const RoundModels& rm) {
            on_models(rm.round, rm.particles, rm.average, rm.masks);
          };
        CheckpointOptions ck{checkpoint_dir, checkpoint_every, fresh};
        hooks.check_interrupt = [] {
          py::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        };
        RunResult r;
        {
          py::gil_scoped_release nogil;
          r = parts.data ? run_imp(cfg, parts, hooks, ck) : run_imp(cfg, data, hooks, ck);
        }
        return py::make_tuple(r.rounds, r.masks, r.state, r.channels_last);
      },
      py::arg("config"), py::arg("x_train"), py::arg("y_train"), py::arg("x_test"),
      py::arg("y_test"), py::arg("num_classes"), py::arg("mean"), py::arg("std"),
      py::arg("on_round") = nullptr, py::arg("on_epoch") = nullptr, py::arg("on_restore") = nullptr,
      py::arg("checkpoint_dir") = "", py::arg("checkpoint_every") = 1, py::arg("fresh") = false,
      py::arg("loss_sync_every") = 0, py::arg("on_ticket") = nullptr,
      py::arg("on_models") = nullptr, py::arg("model") = py::none(), py::arg("feeder") = py::none(),
      py::arg("process_group") = "", py::arg("dist_timeout_s") = 1800.0,
      py::arg("models_with_particles") = true,
      py::arg("subgroups") = std::vector<std::pair<std::vector<int64_t>, std::string>>{});

  m.def(
      "channels_last_on",
      [](const Config& cfg, const std::vector<int64_t>& input_shape, int64_t num_classes,
         const py::object& model) {
        validate_config(cfg, /*check_model=*/model.is_none());
        std::shared_ptr<const ModelSource> source;
        if (model.is_none())
          source = std::make_shared<ZooModelSource>(cfg.model);
        else
          source = std::make_shared<PyModuleSource>(model);
        const ModelPtr one = source->create(ModelSpec{input_shape, num_classes}, 0);
        return channels_last_on(cfg, *one, resolve_device(cfg.device));
      },
      py::arg("config"), py::arg("input_shape"), py::arg("num_classes"),
      py::arg("model") = py::none(),
      "What Config.channels_last resolves to for this model (the zoo's config.model, or a "
      "Python module's adapter) on config.device.");

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
