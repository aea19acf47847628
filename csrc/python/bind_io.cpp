#include <pybind11/stl.h>

#include "bindings.h"
#include "swamp/checkpoint.h"
#include "swamp/safetensors.h"

namespace swamp::python {

void bind_io(py::module_& m) {
  m.def(
      "save_safetensors",
      [](const std::string& path, const std::map<std::string, at::Tensor>& tensors,
         const std::map<std::string, std::string>& metadata) {
        py::gil_scoped_release nogil;
        save_safetensors(path, tensors, metadata);
      },
      py::arg("path"), py::arg("tensors"),
      py::arg("metadata") = std::map<std::string, std::string>{},
      "Writes tensors (and string metadata) as a .safetensors file, atomically (the C++ writer).");
  m.def(
      "load_safetensors",
      [](const std::string& path) {
        SafetensorsFile f;
        {
          py::gil_scoped_release nogil;
          f = load_safetensors(path);
        }
        return py::make_tuple(f.tensors, f.metadata);
      },
      py::arg("path"),
      "Reads a .safetensors file with the C++ reader: (tensors, metadata); a damaged file raises "
      "ValueError naming the problem.");
  m.def(
      "load_checkpoint_tensors",
      [](const std::string& path) {
        py::gil_scoped_release nogil;
        return load_tensors_verified(path);
      },
      py::arg("path"),
      "The named tensors of a checkpoint file (checksum verified; content not interpreted): to "
      "look inside a run's checkpoint.swamp.");
  m.def(
      "save_checkpoint_tensors",
      [](const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
        py::gil_scoped_release nogil;
        save_tensors_atomic(path, tensors);
      },
      py::arg("path"), py::arg("tensors"),
      "Writes named tensors as a checkpoint file (atomic, with its checksum). A run refuses one "
      "whose content is not a consistent run state.");
}

}  // namespace swamp::python
