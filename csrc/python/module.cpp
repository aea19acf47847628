#include <c10/util/Exception.h>

#include <cstring>

#include "bindings.h"
#include "swamp/checkpoint.h"
#include "swamp/version.h"

namespace swamp::python {
namespace {
// c10 errors carry a C++ backtrace in what(); users get the message and the right Python type.
void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const swamp::FileWriteError& e) {
    // an OSError carrying errno and the file (swamp_ext.errors.FileWriteError)
    const char* msg = e.what_without_backtrace();
    try {
      pybind11::object cls = pybind11::module_::import("swamp_ext.errors").attr("FileWriteError");
      pybind11::object err =
          cls(e.error_number(), std::strerror(e.error_number()), e.path(), std::string(msg));
      PyErr_SetObject(cls.ptr(), err.ptr());
    } catch (const pybind11::error_already_set&) {
      PyErr_SetString(PyExc_OSError, msg);  // the package is not importable: a plain OSError
    }
  } catch (const c10::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
  } catch (const c10::TypeError& e) {
    PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
  } catch (const c10::IndexError& e) {
    PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
  } catch (const c10::NotImplementedError& e) {
    PyErr_SetString(PyExc_NotImplementedError, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
  }
}
}  // namespace
}  // namespace swamp::python

PYBIND11_MODULE(_C, m) {
  namespace sp = swamp::python;
  m.doc() = "swamp_ext compiled core (bindings of the swamp_core C++ library)";
  pybind11::register_local_exception_translator(&sp::translate);
  m.def("version", &swamp::version, "Version of the loaded swamp_core library.");
  m.def("built_with_torch_version", &swamp::built_with_torch_version,
        "Torch version swamp_core was compiled against.");
  auto ops = m.def_submodule("ops", "Low-level operations of the core");
  sp::bind_ops(ops);
  sp::bind_engine(m);
  sp::bind_run(m);
  auto io = m.def_submodule("io", "File formats of the core (safetensors)");
  sp::bind_io(io);
  auto inference = m.def_submodule("inference", "Sparse inference (the swamp:: operators)");
  sp::bind_inference(inference);
  auto analysis = m.def_submodule("analysis", "Analyses of what pruning found");
  sp::bind_analysis(analysis);
  auto testing = m.def_submodule(
      "testing", "Test seams: probes of internal mechanisms and fault injection (not for runs)");
  sp::bind_testing(testing);
}
