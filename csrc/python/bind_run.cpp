// The run's doorway from Python: one request object (RunRequest) that Python fills (the data, your
// module, the processes, the hooks, the checkpoint options), its plan decided once by the core
// (RunPlan: the configuration validated, particles per round, channels_last, the device), and the
// run. Options cross as bound objects, not as an argument list.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

#include "bindings.h"
#include "py_batch_source.h"
#include "py_model_source.h"
#include "swamp/distributed.h"
#include "swamp/engine.h"
#include "swamp/model_source.h"

namespace swamp::python {
namespace {

using Subgroups = std::vector<std::pair<std::vector<int64_t>, std::string>>;

// What Python fills. The configuration, the model and the data's shape are fixed at construction:
// the plan is made for them.
struct PyRunRequest {
  PyRunRequest(Config c, std::vector<int64_t> shape, int64_t classes, py::object module)
      : config(std::move(c)),
        input_shape(std::move(shape)),
        num_classes(classes),
        model(std::move(module)) {}

  Config config;
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  py::object model;  // a swamp_ext.modules._ModuleAdapter, or None: the zoo's config.model
  // the data: in-memory tensors (set_tensors) or a TorchData feeder
  Dataset tensors;
  py::object feeder = py::none();
  // the processes: a torch.distributed process group by name ("" : this process alone)
  std::string process_group;
  double dist_timeout_s = 1800.0;
  Subgroups subgroups;
  bool data_parallel = true;
  Hooks hooks;
  CheckpointOptions checkpoint;
  // A stop asked for (a signal's number; 0: none), seen at the next step boundary: set from a
  // Python signal handler, which must not raise inside whatever Python code it interrupts.
  std::shared_ptr<std::atomic<int>> stop_signal = std::make_shared<std::atomic<int>>(0);

  // The model source, made once (the plan and the run share it).
  std::shared_ptr<const ModelSource> source() {
    if (!source_) {
      if (model.is_none())
        source_ = std::make_shared<ZooModelSource>(config.model);
      else
        source_ = std::make_shared<PyModuleSource>(model);
    }
    return source_;
  }
  // The plan, decided once: the configuration validated here and nowhere else in the run.
  std::shared_ptr<const RunPlan> plan() {
    if (!plan_) {
      auto src = source();
      plan_ = std::make_shared<const RunPlan>(
          plan_run(config, *src, ModelSpec{input_shape, num_classes}));
    }
    return plan_;
  }

 private:
  std::shared_ptr<const ModelSource> source_;
  std::shared_ptr<const RunPlan> plan_;
};

// Thrown between two steps when a stop was asked for: the trainer saves, then lets it through.
struct StopRequested : std::runtime_error {
  explicit StopRequested(int sig)
      : std::runtime_error("stopped by signal " + std::to_string(sig)) {}
};

RunResult run(PyRunRequest& rq) {
  const std::shared_ptr<const RunPlan> plan = rq.plan();
  RunRequest core{rq.config, {}, rq.hooks, rq.checkpoint, plan};
  core.parts.model = rq.source();
  const c10::Device dev(plan->device);
  Augment aug;
  if (rq.config.augment) aug = Augment{rq.config.crop_padding, rq.config.flip};
  if (!rq.feeder.is_none()) {
    core.parts.data = std::make_shared<PyBatchSource>(rq.feeder, dev, aug);
  } else {
    TORCH_CHECK_VALUE(rq.tensors.x_train.defined(),
                      "RunRequest: no data (set_tensors or a feeder)");
    py::gil_scoped_release nogil;
    core.parts.data = std::make_shared<TensorBatchSource>(rq.tensors, dev, aug);
  }
  if (!rq.process_group.empty()) {
    TORCH_CHECK_VALUE(rq.dist_timeout_s > 0, "dist_timeout must be > 0 seconds, got ",
                      rq.dist_timeout_s);
    core.parts.processes = std::make_shared<DistributedProcesses>(
        process_group_collectives(
            rq.process_group,
            std::chrono::milliseconds(static_cast<int64_t>(rq.dist_timeout_s * 1000.0)),
            rq.subgroups),
        rq.data_parallel);
  }
  core.hooks.check_interrupt = [stop = rq.stop_signal] {
    {
      py::gil_scoped_acquire gil;  // Python's handlers run here (Ctrl-C raises)
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
    if (const int sig = stop->load(); sig != 0) throw StopRequested(sig);
  };
  py::gil_scoped_release nogil;
  return run_imp(core);
}

}  // namespace

void bind_run(py::module_& m) {
  py::class_<RunPlan>(m, "RunPlan",
                      "What a run will do, decided once by the core before training (RunPlan).")
      .def_readonly("particles", &RunPlan::particles, "particles of each round")
      .def_readonly("swa", &RunPlan::swa, "whether rounds train with SWA")
      .def_readonly("channels_last", &RunPlan::channels_last,
                    "what Config.channels_last resolves to for this model and device")
      .def_readonly("precision", &RunPlan::precision)
      .def_readonly("device", &RunPlan::device, "Config.device resolved ('cuda' -> 'cuda:0')")
      .def_property_readonly("max_particles", &RunPlan::max_particles);

  py::class_<RoundModels>(m, "RoundModels", "The models of a finished round (copies, on the CPU).")
      .def_readonly("round", &RoundModels::round)
      .def_readonly("particles", &RoundModels::particles)
      .def_readonly("average", &RoundModels::average)
      .def_readonly("masks", &RoundModels::masks);

  py::class_<Hooks>(m, "Hooks", "What a run calls back (swamp::Hooks).")
      .def(py::init<>())
      .def_readwrite("on_round", &Hooks::on_round)
      .def_readwrite("on_epoch", &Hooks::on_epoch)
      .def_readwrite("on_ticket", &Hooks::on_ticket)
      .def_readwrite("on_models", &Hooks::on_models)
      .def_readwrite("models_with_particles", &Hooks::models_with_particles)
      .def_readwrite("on_restore", &Hooks::on_restore)
      .def_readwrite("loss_sync_every", &Hooks::loss_sync_every);

  py::class_<CheckpointOptions>(m, "CheckpointOptions", "Where and how often a run checkpoints.")
      .def(py::init<>())
      .def_readwrite("dir", &CheckpointOptions::dir)
      .def_readwrite("every_epochs", &CheckpointOptions::every_epochs)
      .def_readwrite("every_steps", &CheckpointOptions::every_steps)
      .def_readwrite("fresh", &CheckpointOptions::fresh);

  py::class_<RunResult>(m, "RunResult")
      .def_readonly("plan", &RunResult::plan)
      .def_readonly("channels_last", &RunResult::channels_last)
      .def_readonly("rounds", &RunResult::rounds)
      .def_readonly("masks", &RunResult::masks)
      .def_readonly("state", &RunResult::state);

  py::class_<PyRunRequest>(m, "RunRequest",
                           "Everything a run is given (swamp::RunRequest), filled from Python.")
      .def(py::init<Config, std::vector<int64_t>, int64_t, py::object>(), py::arg("config"),
           py::arg("input_shape"), py::arg("num_classes"), py::arg("model") = py::none())
      .def_readonly("config", &PyRunRequest::config)
      .def(
          "set_tensors",
          [](PyRunRequest& rq, at::Tensor x_train, at::Tensor y_train, at::Tensor x_test,
             at::Tensor y_test, std::vector<double> mean, std::vector<double> std) {
            rq.tensors = Dataset{std::move(x_train), std::move(y_train), std::move(x_test),
                                 std::move(y_test),  rq.num_classes,     std::move(mean),
                                 std::move(std)};
          },
          py::arg("x_train"), py::arg("y_train"), py::arg("x_test"), py::arg("y_test"),
          py::arg("mean"), py::arg("std"), "In-memory data (a swamp_ext.datasets.Dataset's).")
      .def_readwrite("feeder", &PyRunRequest::feeder, "A TorchData feeder (instead of tensors).")
      .def(
          "set_processes",
          [](PyRunRequest& rq, std::string group, double timeout_s, Subgroups subgroups,
             bool data_parallel) {
            rq.process_group = std::move(group);
            rq.dist_timeout_s = timeout_s;
            rq.subgroups = std::move(subgroups);
            rq.data_parallel = data_parallel;
          },
          py::arg("process_group"), py::arg("timeout_s"), py::arg("subgroups"),
          py::arg("data_parallel") = true,
          "Spread the run over a torch.distributed process group (by name), with the subgroups "
          "that train one particle together; data_parallel False: one process per particle.")
      .def(
          "request_stop", [](PyRunRequest& rq, int sig) { rq.stop_signal->store(sig); },
          py::arg("signal"),
          "Asks the run to save and stop at the next step boundary (safe in a signal handler).")
      .def_property_readonly(
          "stop_signal", [](const PyRunRequest& rq) { return rq.stop_signal->load(); },
          "The signal that asked the run to stop (0: none).")
      .def_readwrite("hooks", &PyRunRequest::hooks)
      .def_readwrite("checkpoint", &PyRunRequest::checkpoint)
      .def(
          "plan", [](PyRunRequest& rq) { return *rq.plan(); },
          "The run's plan (decided once; the configuration is validated here).");

  py::register_local_exception<StopRequested>(
      m, "StopRequested", PyExc_Exception);  // swamp_ext.RunStopped is what users see
  m.def("run", &run, py::arg("request"), "Runs IMP / SWAMP as requested.");
  m.def("particles_per_round", &particles_per_round, py::arg("config"),
        "Particles the configured method trains in each round.");
}

}  // namespace swamp::python
