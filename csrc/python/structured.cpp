#include "structured.h"

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace swamp::python {

c10::IValue structured_inputs(const py::handle& obj,
                              const std::function<at::Tensor(const at::Tensor&)>& move) {
  if (THPVariable_Check(obj.ptr())) return move(obj.cast<at::Tensor>());
  if (py::isinstance<py::tuple>(obj) || py::isinstance<py::list>(obj)) {
    std::vector<c10::IValue> items;
    for (const auto& item : obj) items.push_back(structured_inputs(item, move));
    if (py::isinstance<py::tuple>(obj)) return c10::ivalue::Tuple::create(std::move(items));
    c10::impl::GenericList list(c10::AnyType::get());
    for (auto& v : items) list.push_back(std::move(v));
    return list;
  }
  if (py::isinstance<py::dict>(obj)) {
    c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
    for (const auto& kv : obj.cast<py::dict>()) {
      TORCH_CHECK_TYPE(py::isinstance<py::str>(kv.first),
                       "data: dict inputs need string keys, got ",
                       py::str(py::type::of(kv.first)).cast<std::string>());
      dict.insert(kv.first.cast<std::string>(), structured_inputs(kv.second, move));
    }
    return dict;
  }
  TORCH_CHECK_TYPE(false,
                   "data: model inputs must be a tensor or a tuple / list / dict of tensors, "
                   "got ",
                   py::str(py::type::of(obj)).cast<std::string>());
}

py::object to_python(const c10::IValue& v) {
  if (v.isTensor()) return py::cast(v.toTensor());
  if (v.isTuple()) {
    const auto& elems = v.toTupleRef().elements();
    py::tuple t(elems.size());
    for (size_t i = 0; i < elems.size(); ++i) t[i] = to_python(elems[i]);
    return std::move(t);
  }
  if (v.isList()) {
    py::list l;
    for (const c10::IValue& item : v.toListRef()) l.append(to_python(item));
    return std::move(l);
  }
  if (v.isGenericDict()) {
    py::dict d;
    for (const auto& kv : v.toGenericDict())
      d[py::str(kv.key().toStringRef())] = to_python(kv.value());
    return std::move(d);
  }
  TORCH_CHECK_TYPE(false, "model inputs: cannot pass ", v.tagKind(), " to Python");
}

}  // namespace swamp::python
