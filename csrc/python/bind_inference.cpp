// Sparse inference from Python: the swamp:: operators called directly (the eager fast path of
// swamp_ext.inference's modules; everything else reaches them through torch.ops.swamp).
#include "bindings.h"
#include "swamp/inference.h"

namespace swamp::python {

void bind_inference(py::module_& m) {
  // Tiny products at batch 1 are a few microseconds: the call itself is the cost, so no GIL
  // release and no schema parsing.
  m.def("sparse_linear", &inference::sparse_linear, py::arg("input"), py::arg("crow_indices"),
        py::arg("col_indices"), py::arg("values"), py::arg("bias"), py::arg("in_features"));
  m.def(
      "sparse_conv2d",
      [](const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col,
         const at::Tensor& values, const std::optional<at::Tensor>& bias,
         const std::vector<int64_t>& weight_shape, const std::vector<int64_t>& stride,
         const std::vector<int64_t>& padding) {
        py::gil_scoped_release nogil;  // convolutions are long enough to let other threads run
        return inference::sparse_conv2d(x, crow, col, values, bias, weight_shape, stride, padding);
      },
      py::arg("input"), py::arg("crow_indices"), py::arg("col_indices"), py::arg("values"),
      py::arg("bias"), py::arg("weight_shape"), py::arg("stride"), py::arg("padding"));
}

}  // namespace swamp::python
