#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "swamp/engine.h"
#include "swamp/layers.h"
#include "swamp/models.h"

namespace swamp::python {

void bind_engine(py::module_& m) {
  py::class_<Config>(m, "Config", "C++ run configuration (use swamp_ext.Config from Python)")
      .def(py::init<>())
      .def_readwrite("model", &Config::model)
      .def_readwrite("method", &Config::method)
      .def_readwrite("particles", &Config::particles)
      .def_readwrite("rounds", &Config::rounds)
      .def_readwrite("prune_ratio", &Config::prune_ratio)
      .def_readwrite("epochs", &Config::epochs)
      .def_readwrite("rewind_epochs", &Config::rewind_epochs)
      .def_readwrite("rewind_steps", &Config::rewind_steps)
      .def_readwrite("batch_size", &Config::batch_size)
      .def_readwrite("lr", &Config::lr)
      .def_readwrite("momentum", &Config::momentum)
      .def_readwrite("nesterov", &Config::nesterov)
      .def_readwrite("weight_decay", &Config::weight_decay)
      .def_readwrite("schedule", &Config::schedule)
      .def_readwrite("warmup_epochs", &Config::warmup_epochs)
      .def_readwrite("swa_start", &Config::swa_start)
      .def_readwrite("swa_lr", &Config::swa_lr)
      .def_readwrite("use_swa", &Config::use_swa)
      .def_readwrite("single_particle_rounds", &Config::single_particle_rounds)
      .def_readwrite("keep_first_last_dense", &Config::keep_first_last_dense)
      .def_readwrite("seed", &Config::seed)
      .def_readwrite("device", &Config::device)
      .def_readwrite("eval_batch_size", &Config::eval_batch_size)
      .def_readwrite("bn_batch_size", &Config::bn_batch_size)
      .def_readwrite("deterministic", &Config::deterministic)
      .def_readwrite("augment", &Config::augment)
      .def_readwrite("crop_padding", &Config::crop_padding)
      .def_readwrite("flip", &Config::flip)
      .def_readwrite("particle_mode", &Config::particle_mode)
      .def_readwrite("sparse_kernels", &Config::sparse_kernels)
      .def_readwrite("sparse_density", &Config::sparse_density);
  m.def("validate_config", &validate_config, py::arg("config"));

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
      .def_readonly("particle_acc", &RoundResult::particle_acc)
      .def_readonly("particle_nll", &RoundResult::particle_nll)
      .def_readonly("layer_density", &RoundResult::layer_density)
      .def_readonly("train_loss", &RoundResult::train_loss)
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
         const std::string& checkpoint_dir, int64_t checkpoint_every, bool fresh) {
        Dataset data{x_train,     y_train,         x_test,        y_test,
                     num_classes, std::move(mean), std::move(std)};
        Hooks hooks;
        hooks.on_round = std::move(on_round);
        hooks.on_epoch = std::move(on_epoch);
        hooks.on_restore = std::move(on_restore);
        CheckpointOptions ck{checkpoint_dir, checkpoint_every, fresh};
        hooks.check_interrupt = [] {
          py::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        };
        RunResult r;
        {
          py::gil_scoped_release nogil;
          r = run_imp(cfg, data, hooks, ck);
        }
        return py::make_tuple(r.rounds, r.masks, r.state);
      },
      py::arg("config"), py::arg("x_train"), py::arg("y_train"), py::arg("x_test"),
      py::arg("y_test"), py::arg("num_classes"), py::arg("mean"), py::arg("std"),
      py::arg("on_round") = nullptr, py::arg("on_epoch") = nullptr, py::arg("on_restore") = nullptr,
      py::arg("checkpoint_dir") = "", py::arg("checkpoint_every") = 1, py::arg("fresh") = false);

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
         const std::string& sparse_kernels, double sparse_density, int64_t steps, int64_t repeats,
         const std::string& device, bool threads) {
        StepBenchOptions o{name,    input_shape, num_classes,    batch_size,     particles,
                           stacked, sparsity,    sparse_kernels, sparse_density, steps,
                           repeats, device,      threads};
        py::gil_scoped_release nogil;
        return train_step_seconds(o);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("batch_size") = 128,
      py::arg("particles") = 1, py::arg("stacked") = true, py::arg("sparsity") = 0.0,
      py::arg("sparse_kernels") = "off", py::arg("sparse_density") = 0.5, py::arg("steps") = 20,
      py::arg("repeats") = 5, py::arg("device") = "cpu", py::arg("threads") = false,
      "Seconds per training step of pruned, possibly stacked / sparse particles; stacked=False, "
      "threads=True: one model per particle, side by side, one thread each.");
  models.def(
      "particles_forward_backward",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         const std::vector<std::map<std::string, at::Tensor>>& states, const at::Tensor& x,
         const at::Tensor& y, bool stacked, const std::map<std::string, at::Tensor>& masks,
         const std::string& sparse_kernels) {
        const int64_t N = static_cast<int64_t>(states.size());
        TORCH_CHECK_VALUE(N >= 1, "particles_forward_backward: no particle states");
        TORCH_CHECK_VALUE(
            x.dim() >= 3 && x.size(0) == N && y.dim() == 2 && y.size(0) == N,
            "particles_forward_backward: x must be [N, B, ...] and y [N, B] with N = ", N,
            " particles");
        // state `index` into particle n of a P-particle model
        auto load = [](torch::nn::Module& m, const std::map<std::string, at::Tensor>& st, int64_t P,
                       int64_t n, int64_t index) {
          torch::NoGradGuard no_grad;
          auto put = [&](const std::string& key, const at::Tensor& t) {
            at::Tensor dst = layers::particle_slice(t, P, n);
            auto it = st.find(key);
            TORCH_CHECK_VALUE(it != st.end(), "particles_forward_backward: state ", index,
                              " has no entry '", key, "'");
            TORCH_CHECK_VALUE(it->second.sizes() == dst.sizes(),
                              "particles_forward_backward: state ", index, " entry '", key,
                              "' has shape ", it->second.sizes(), ", expected ", dst.sizes());
            dst.copy_(it->second);
          };
          for (auto& item : m.named_parameters(true)) put(item.key(), item.value());
          for (auto& item : m.named_buffers(true))
            if (item.value().dim() > 0 || n == 0) put(item.key(), item.value());
        };
        // pruned weights multiplied by their mask, then the layers `sparse_kernels` picks go sparse
        auto prune = [&](torch::nn::Module& m, int64_t P) {
          {
            torch::NoGradGuard no_grad;
            auto named = m.named_parameters(true);
            for (const auto& kv : masks) {
              TORCH_CHECK_VALUE(named.contains(kv.first),
                                "particles_forward_backward: mask for unknown parameter '",
                                kv.first, "'");
              at::Tensor p = named[kv.first];
              TORCH_CHECK_VALUE(kv.second.sizes() == layers::particle_slice(p, P, 0).sizes(),
                                "particles_forward_backward: mask '", kv.first, "' has shape ",
                                kv.second.sizes());
              for (int64_t n = 0; n < P; ++n)
                layers::particle_slice(p, P, n).mul_(kv.second.to(p.options()));
            }
          }
          layers::enable_sparse(m, masks, sparse_kernels, 1.0);
        };
        // a sparse layer's weight gradient is its values' gradient, as a dense tensor
        auto grads_of = [](torch::nn::Module& m, int64_t P, int64_t n) {
          std::map<std::string, at::Tensor> g;
          for (const auto& item : m.named_parameters(true))
            if (item.value().grad().defined())
              g[item.key()] = layers::particle_slice(item.value().grad(), P, n).clone();
          for (const auto& item : m.named_modules("", /*include_self=*/false))
            if (auto lin = std::dynamic_pointer_cast<layers::LinearImpl>(item.value()))
              if (lin->is_sparse())
                g[item.key() + ".weight"] =
                    layers::particle_slice(lin->dense_from_values(lin->values().grad()), P, n);
          return g;
        };
        std::vector<std::map<std::string, at::Tensor>> grads;
        at::Tensor logits;
        py::gil_scoped_release nogil;
        if (stacked) {
          ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes, N}, 0);
          model->to(x.scalar_type());
          for (int64_t n = 0; n < N; ++n) load(*model, states[n], N, n, n);
          prune(*model, N);
          model->train(true);
          logits = layers::split_outputs(model->forward(layers::stack_inputs(x)), N);
          at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}), y.reshape(-1))
              .mul(static_cast<double>(N))
              .backward();
          for (int64_t n = 0; n < N; ++n) grads.push_back(grads_of(*model, N, n));
        } else {
          std::vector<at::Tensor> outs;
          for (int64_t n = 0; n < N; ++n) {
            ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
            model->to(x.scalar_type());
            load(*model, states[n], 1, 0, n);
            prune(*model, 1);
            model->train(true);
            outs.push_back(model->forward(x[n]));
            at::cross_entropy_loss(outs.back(), y[n]).backward();
            grads.push_back(grads_of(*model, 1, 0));
          }
          logits = at::stack(outs);
        }
        return std::make_pair(logits.detach(), grads);
      },
      py::arg("name"), py::arg("input_shape"), py::arg("num_classes"), py::arg("states"),
      py::arg("x"), py::arg("y"), py::arg("stacked"),
      py::arg("masks") = std::map<std::string, at::Tensor>{}, py::arg("sparse_kernels") = "off",
      "One training-mode forward and backward of N particles (states), each on its own batch, in "
      "the dtype of x: stacked in one model or one model each, with the weights pruned by `masks` "
      "(single-particle bool masks by parameter name) and the linear layers `sparse_kernels` "
      "picks (off / on / auto at density 1) on the sparse kernels. Returns (logits [N, B, K], "
      "per-particle grads).");
  models.def(
      "create",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         uint64_t seed) {
        ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, seed);
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
      "Builds a model; returns (state_dict, prunable parameter names).");
  models.def(
      "forward",
      [](const std::string& name, const std::vector<int64_t>& input_shape, int64_t num_classes,
         const std::map<std::string, at::Tensor>& state, const at::Tensor& x) {
        ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
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
      py::arg("x"), "Evaluation-mode forward of a C++ model with the given weights.");
}

}  // namespace swamp::python
