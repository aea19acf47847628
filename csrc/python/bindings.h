// Binding files: the only place that includes torch's Python headers.
#pragma once

#include <torch/python.h>

#include "swamp/data.h"
#include "swamp/engine.h"

namespace swamp::python {
namespace py = pybind11;

// The run's parts from Python: `model` a torch module (None: the zoo's config.model), `feeder`
// a TorchData feeder (None: the tensors of `data`), augmentation as configured when `augment`.
RunParts make_parts(const Config& cfg, const Dataset& data, const py::object& model,
                    const py::object& feeder, bool augment);

void bind_ops(py::module_& m);
void bind_engine(py::module_& m);
void bind_run(py::module_& m);
void bind_testing(py::module_& m);
void bind_io(py::module_& m);
void bind_analysis(py::module_& m);
void bind_inference(py::module_& m);
}  // namespace swamp::python
