#include <ATen/Parallel.h>

#include "../common/lanes.h"
#include "bindings.h"
#include "swamp/data.h"
#include "swamp/distributed.h"
#include "swamp/layers.h"
#include "swamp/optim.h"
#include "swamp/pruning.h"

namespace swamp::python {

void bind_ops(py::module_& m) {
  py::enum_<PruneBackend>(m, "PruneBackend")
      .value("auto", PruneBackend::Auto)
      .value("native", PruneBackend::Native)
      .value("aten", PruneBackend::ATen);

  m.def(
      "global_magnitude_prune",
      [](const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& masks, double ratio,
         PruneBackend backend) {
        py::gil_scoped_release nogil;
        return global_magnitude_prune(weights, masks, ratio, backend);
      },
      py::arg("weights"), py::arg("masks"), py::arg("ratio"),
      py::arg("backend") = PruneBackend::Auto);
  m.def(
      "global_magnitude_prune_",
      [](const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& masks, double ratio,
         PruneBackend backend) {
        PruneStats s;
        {
          py::gil_scoped_release nogil;
          s = global_magnitude_prune_(weights, masks, ratio, backend);
        }
        return py::make_tuple(s.remaining_before, s.pruned, s.threshold);
      },
      py::arg("weights"), py::arg("masks"), py::arg("ratio"),
      py::arg("backend") = PruneBackend::Auto);
  m.def("prune_count", &prune_count, py::arg("ratio"), py::arg("remaining"));
  m.def(
      "nm_prune_",
      [](const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& masks, int64_t keep,
         int64_t m) {
        PruneStats s;
        {
          py::gil_scoped_release nogil;
          s = nm_prune_(weights, masks, keep, m);
        }
        return py::make_tuple(s.remaining_before, s.pruned);
      },
      py::arg("weights"), py::arg("masks"), py::arg("keep"), py::arg("m"));
  m.def("nm_fits", &nm_fits, py::arg("weight"), py::arg("m"));
  m.def(
      "parse_nm",
      [](const std::string& text) -> py::object {
        const auto p = parse_nm(text);
        if (!p) return py::none();
        return py::make_tuple(p->n, p->m);
      },
      py::arg("pruning"));
  m.def(
      "nm_keep_after",
      [](int64_t n, int64_t m, int64_t round) { return nm_keep_after(NMPattern{n, m}, round); },
      py::arg("n"), py::arg("m"), py::arg("round"));

  m.def("lanes_concurrent", &lanes_concurrent);
  m.def("channels_last_enabled", &layers::channels_last_enabled,
        "Whether this thread's training forward runs channels-last (Config.channels_last).");
  m.def(
      "gradient_sync_stats",
      [](bool reset) {
        const GradientSyncStats s = gradient_sync_stats(reset);
        py::dict d;
        d["steps"] = s.steps;
        d["buckets"] = s.buckets;
        d["bytes"] = s.bytes;
        d["in_flight_s"] = s.in_flight_s;
        d["blocked_s"] = s.blocked_s;
        return d;
      },
      py::arg("reset") = false,
      "This process's gradient all-reduces of data-parallel steps since the last reset: steps, "
      "buckets, bytes, in_flight_s (the time some bucket's sum was travelling), blocked_s (the "
      "time the training thread waited for them).");
  m.def("sync_batchnorm_active", &layers::sync_batchnorm_active,
        "Whether this thread trains a data-parallel particle with Config.sync_batchnorm.");
  m.def(
      "sync_batch_norm",
      [](const at::Tensor& x, const std::optional<at::Tensor>& weight,
         const std::optional<at::Tensor>& bias, const at::Tensor& running_mean,
         const at::Tensor& running_var, const std::optional<at::Tensor>& num_batches_tracked,
         std::optional<double> momentum, double eps) {
        return layers::sync_batch_norm(
            x, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()), running_mean,
            running_var, num_batches_tracked.value_or(at::Tensor()), momentum.value_or(-1.0), eps);
      },
      py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
      py::arg("running_var"), py::arg("num_batches_tracked"), py::arg("momentum"), py::arg("eps"),
      "Training-mode batch norm with the statistics of the data-parallel group's whole batch "
      "(inside the core's training step with Config.sync_batchnorm); momentum None: cumulative.");

  py::class_<MaskedSGD>(m, "MaskedSGD")
      .def(py::init([](std::vector<at::Tensor> params, std::vector<at::Tensor> masks,
                       double momentum, bool nesterov, double weight_decay) {
             return MaskedSGD(std::move(params), std::move(masks),
                              SgdOptions{momentum, nesterov, weight_decay});
           }),
           py::arg("params"), py::arg("masks"), py::arg("momentum") = 0.9,
           py::arg("nesterov") = false, py::arg("weight_decay") = 0.0)
      .def(
          "step",
          [](MaskedSGD& o, double lr, std::optional<size_t> begin, std::optional<size_t> end) {
            o.step(lr, begin.value_or(0), end.value_or(o.size()));
          },
          py::arg("lr"), py::arg("begin") = py::none(), py::arg("end") = py::none(),
          "One step of parameters [begin, end) (default: all).")
      .def(
          "zero_grad",
          [](MaskedSGD& o, std::optional<size_t> begin, std::optional<size_t> end) {
            o.zero_grad(begin.value_or(0), end.value_or(o.size()));
          },
          py::arg("begin") = py::none(), py::arg("end") = py::none())
      .def("momentum_buffers", &MaskedSGD::momentum_buffers);

  py::class_<LossScaler>(m, "LossScaler",
                         "fp16 dynamic loss scaling (torch.amp.GradScaler's rule), as runs with "
                         "precision='fp16' use it.")
      .def(py::init([](double init_scale, double growth_factor, double backoff_factor,
                       int64_t growth_interval) {
             return LossScaler(
                 LossScaleOptions{init_scale, growth_factor, backoff_factor, growth_interval});
           }),
           py::arg("init_scale") = 65536.0, py::arg("growth_factor") = 2.0,
           py::arg("backoff_factor") = 0.5, py::arg("growth_interval") = 2000)
      .def_property_readonly("scale", &LossScaler::scale)
      .def_property_readonly("growth_tracker", &LossScaler::growth_tracker)
      .def_property_readonly("consecutive_skips", &LossScaler::consecutive_skips)
      .def("unscale", &LossScaler::unscale, py::arg("grads"),
           "Divides the gradients by the scale in place; True when all are finite.")
      .def("update", &LossScaler::update, py::arg("found_inf"));

  m.def(
      "learning_rate",
      [](const std::string& kind, double lr, int64_t total_steps, int64_t warmup_steps,
         int64_t swa_start_step, double swa_lr, int64_t step) {
        ScheduleOptions s{kind, lr, total_steps, warmup_steps, swa_start_step, swa_lr};
        return learning_rate(s, step);
      },
      py::arg("kind"), py::arg("lr"), py::arg("total_steps"), py::arg("warmup_steps"),
      py::arg("swa_start_step"), py::arg("swa_lr"), py::arg("step"));
  m.def(
      "prepare_inputs",
      [](const at::Tensor& x, std::vector<double> mean, std::vector<double> std,
         int64_t crop_padding, bool flip, std::optional<uint64_t> seed) {
        Dataset d;
        d.x_train = x;
        d.mean = std::move(mean);
        d.std = std::move(std);
        TORCH_CHECK_VALUE(d.mean.size() == d.std.size(), "mean and std differ in length");
        TORCH_CHECK_VALUE(
            d.mean.empty() || (x.dim() == 4 && x.size(1) == static_cast<int64_t>(d.mean.size())),
            "mean/std need [N, C, H, W] inputs with one entry per channel");
        InputPipeline pipe(d, Augment{crop_padding, flip});
        if (!seed) return pipe(x);
        BatchOrder order(1, *seed);
        return pipe(x, &order.generator());
      },
      py::arg("x"), py::arg("mean"), py::arg("std"), py::arg("crop_padding") = 0,
      py::arg("flip") = false, py::arg("seed") = std::nullopt,
      "The engine's input pipeline: uint8 -> [0, 1], random crop/flip (with a seed), normalise.");
  m.def("hash_seed", &hash_seed, py::arg("seed"), py::arg("round"), py::arg("particle"),
        py::arg("stream") = 0);
  m.def(
      "batch_order",
      [](int64_t n, uint64_t seed, int64_t round, int64_t particle, int64_t epoch) {
        TORCH_CHECK_VALUE(n > 0 && epoch >= 0, "batch_order: n must be > 0 and epoch >= 0");
        BatchOrder order(n, hash_seed(seed, round, particle));
        return order.epoch(epoch).clone();
      },
      py::arg("n"), py::arg("seed"), py::arg("round"), py::arg("particle"), py::arg("epoch"),
      "The permutation a particle uses in an epoch of a round (as the engine draws it).");
}

}  // namespace swamp::python
