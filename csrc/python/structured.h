// Structured model inputs between Python and the core: a tuple / list / dict (string keys) of
// tensors as a c10::IValue and back (Batch::inputs, Model::forward_inputs). GIL held.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>

#include "bindings.h"

namespace swamp::python {

// `move` is applied to every tensor (e.g. to the training device). Throws c10::TypeError naming
// what is not a tensor, tuple, list or dict of them.
c10::IValue structured_inputs(const py::handle& obj,
                              const std::function<at::Tensor(const at::Tensor&)>& move);
py::object to_python(const c10::IValue& value);

}  // namespace swamp::python
