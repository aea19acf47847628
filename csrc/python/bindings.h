// Binding files: the only place that includes torch's Python headers.
#pragma once

#include <torch/python.h>

namespace swamp::python {
namespace py = pybind11;

void bind_ops(py::module_& m);
void bind_engine(py::module_& m);
void bind_testing(py::module_& m);
void bind_io(py::module_& m);
void bind_analysis(py::module_& m);
}  // namespace swamp::python
