#include <pybind11/stl.h>

#include "bindings.h"
#include "swamp/analysis.h"

namespace swamp::python {

void bind_analysis(py::module_& m) {
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
