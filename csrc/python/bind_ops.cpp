#include "bindings.h"
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
}

}  // namespace swamp::python
