#include <pybind11/stl.h>

#include <limits>

#include "bindings.h"
#include "swamp/analysis.h"

namespace swamp::python {
namespace {

// What an analysis runs on: the run's config and parts (its model and data, no augmentation).
struct Setup {
  Config cfg;
  RunParts parts;
};

}  // namespace

void bind_analysis(py::module_& m) {
  py::class_<Setup>(m, "Setup", "A run's config, model and data, for analyses")
      .def(py::init([](const Config& cfg, const at::Tensor& x_train, const at::Tensor& y_train,
                       const at::Tensor& x_test, const at::Tensor& y_test, int64_t num_classes,
                       std::vector<double> mean, std::vector<double> std, const py::object& model,
                       const py::object& feeder) {
             Dataset data{x_train,     y_train,         x_test,        y_test,
                          num_classes, std::move(mean), std::move(std)};
             return Setup{cfg, make_parts(cfg, data, model, feeder, /*augment=*/false)};
           }),
           py::arg("config"), py::arg("x_train"), py::arg("y_train"), py::arg("x_test"),
           py::arg("y_test"), py::arg("num_classes"), py::arg("mean"), py::arg("std"),
           py::arg("model") = py::none(), py::arg("feeder") = py::none());

  py::class_<PathPoint>(m, "PathPoint")
      .def_readonly("alpha", &PathPoint::alpha)
      .def_readonly("train_loss", &PathPoint::train_loss)
      .def_readonly("train_acc", &PathPoint::train_acc)
      .def_readonly("test_loss", &PathPoint::test_loss)
      .def_readonly("test_acc", &PathPoint::test_acc);
  py::class_<LinearPath>(m, "LinearPath")
      .def_readonly("points", &LinearPath::points)
      .def_readonly("train_loss_barrier", &LinearPath::train_loss_barrier)
      .def_readonly("train_error_barrier", &LinearPath::train_error_barrier)
      .def_readonly("test_loss_barrier", &LinearPath::test_loss_barrier)
      .def_readonly("test_error_barrier", &LinearPath::test_error_barrier);
  m.def(
      "linear_path",
      [](Setup& s, const State& a, const State& b, int64_t points, bool recompute_bn, bool train,
         bool test, int64_t train_samples) {
        py::gil_scoped_release nogil;
        return linear_path(s.cfg, s.parts, a, b,
                           PathOptions{points, recompute_bn, train, test, train_samples});
      },
      py::arg("setup"), py::arg("a"), py::arg("b"), py::arg("points") = 11,
      py::arg("recompute_bn") = false, py::arg("train") = true, py::arg("test") = true,
      py::arg("train_samples") = 0,
      "Loss and accuracy along (1 - alpha) a + alpha b and the barriers.");

  py::class_<HessianTrace>(m, "HessianTrace")
      .def_readonly("trace", &HessianTrace::trace)
      .def_readonly("std_error", &HessianTrace::std_error)
      .def_readonly("samples", &HessianTrace::samples)
      .def_readonly("converged", &HessianTrace::converged)
      .def_readonly("dimension", &HessianTrace::dimension);
  m.def(
      "hessian_trace",
      [](Setup& s, const State& state, const State& masks, int64_t train_samples,
         int64_t min_samples, int64_t max_samples, double tolerance, int64_t block, uint64_t seed) {
        py::gil_scoped_release nogil;
        return hessian_trace(
            s.cfg, s.parts, state, masks,
            TraceOptions{train_samples, min_samples, max_samples, tolerance, block, seed});
      },
      py::arg("setup"), py::arg("state"), py::arg("masks"), py::arg("train_samples") = 1000,
      py::arg("min_samples") = 10, py::arg("max_samples") = 200, py::arg("tolerance") = 0.05,
      py::arg("block") = 10, py::arg("seed") = 0,
      "Hutchinson's estimate of the training loss's Hessian trace over the unpruned weights.");

  py::class_<Scores>(m, "Scores")
      .def_readonly("acc", &Scores::acc)
      .def_readonly("nll", &Scores::nll)
      .def_readonly("ece", &Scores::ece);
  py::class_<EnsembleScores>(m, "EnsembleScores")
      .def_readonly("members", &EnsembleScores::members)
      .def_readonly("ensemble", &EnsembleScores::ensemble);
  m.def(
      "ensemble_scores",
      [](Setup& s, const std::vector<State>& states) {
        py::gil_scoped_release nogil;
        return ensemble_scores(s.cfg, s.parts, states);
      },
      py::arg("setup"), py::arg("states"),
      "Test figures of each model and of their prediction ensemble.");

  py::class_<Overlap>(m, "Overlap", "Intersection over union of two masks' kept weights")
      .def_readonly("kept_a", &Overlap::kept_a)
      .def_readonly("kept_b", &Overlap::kept_b)
      .def_readonly("intersection", &Overlap::intersection)
      .def_readonly("union", &Overlap::uni)
      .def_readonly("total", &Overlap::total)
      .def_property_readonly("iou", &Overlap::iou);
  m.def(
      "mask_overlap",
      [](const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
        py::gil_scoped_release nogil;
        return mask_overlap(a, b);
      },
      py::arg("a"), py::arg("b"),
      "Per parameter and overall (key ''): IoU of two runs' bool masks of the same parameters.");
}

}  // namespace swamp::python
