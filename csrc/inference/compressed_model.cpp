// A built-in model from a CSR file, run with its pruned layers sparse (swamp/inference.h).
#include <ATen/Functions.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <cctype>
#include <map>
#include <string>
#include <vector>

#include "swamp/inference.h"
#include "swamp/layers.h"
#include "swamp/safetensors.h"

namespace swamp::inference {
namespace {

constexpr const char* kFormat = "swamp_ext-csr-1";

const std::string& metadata(const SafetensorsFile& f, const std::string& path,
                            const std::string& key) {
  auto it = f.metadata.find(key);
  TORCH_CHECK_VALUE(it != f.metadata.end(), path, ": no '", key,
                    "' in the metadata (a CSR file written by swamp_ext 0.1 or later: swamp-ext "
                    "export --format csr)");
  return it->second;
}

int64_t parse_int(const std::string& text, const std::string& what) {
  size_t used = 0;
  int64_t v = -1;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK_VALUE(used == text.size() && !text.empty() && v >= 0, what,
                    " must be an integer >= 0, got '", text, "'");
  return v;
}

// "[1, 28, 28]" -> {1, 28, 28}
std::vector<int64_t> parse_shape(const std::string& text, const std::string& what) {
  std::string s;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) s += c;
  TORCH_CHECK_VALUE(s.size() >= 2 && s.front() == '[' && s.back() == ']', what,
                    " must be a list of integers, got '", text, "'");
  std::vector<int64_t> out;
  size_t i = 1;
  while (i + 1 < s.size()) {
    const size_t j = s.find(',', i);
    const size_t end = j == std::string::npos ? s.size() - 1 : j;
    out.push_back(parse_int(s.substr(i, end - i), what));
    i = end + 1;
  }
  TORCH_CHECK_VALUE(!out.empty() && out.size() <= 3, what, " must have 1 to 3 entries, got '", text,
                    "'");
  return out;
}

const at::Tensor& entry(const SafetensorsFile& f, const std::string& path, const std::string& key) {
  auto it = f.tensors.find(key);
  TORCH_CHECK_VALUE(it != f.tensors.end(), path, ": no tensor '", key, "'");
  return it->second;
}

// The mask and dense weight of `name` (shape `shape`) from its CSR entries, every index checked.
std::pair<at::Tensor, at::Tensor> densify(const SafetensorsFile& f, const std::string& path,
                                          const std::string& name, at::IntArrayRef shape) {
  const at::Tensor values = entry(f, path, name + ".values");
  const at::Tensor crow = entry(f, path, name + ".crow_indices").to(at::kLong);
  const at::Tensor col = entry(f, path, name + ".col_indices").to(at::kLong);
  const int64_t rows = shape[0], numel = c10::multiply_integers(shape);
  const int64_t cols = rows > 0 ? numel / rows : 0;
  const int64_t nnz = values.numel();
  TORCH_CHECK_VALUE(values.dim() == 1 && values.is_floating_point() && crow.dim() == 1 &&
                        col.dim() == 1 && crow.numel() == rows + 1 && col.numel() == nnz,
                    path, ": the CSR entries of '", name, "' do not describe a ", shape, " weight");
  const int64_t* cp = crow.const_data_ptr<int64_t>();
  const int64_t* cc = col.const_data_ptr<int64_t>();
  bool ok = cp[0] == 0 && cp[rows] == nnz;
  for (int64_t r = 0; ok && r < rows; ++r) ok = cp[r] <= cp[r + 1];
  for (int64_t e = 0; ok && e < nnz; ++e) ok = cc[e] >= 0 && cc[e] < cols;
  TORCH_CHECK_VALUE(ok, path, ": the CSR indices of '", name, "' are out of range for ", shape);
  at::Tensor mask = at::zeros({rows * cols}, at::kBool);
  at::Tensor dense = at::zeros({rows * cols}, values.options().dtype(at::kFloat));
  const at::Tensor row_of = at::repeat_interleave(at::arange(rows), crow.diff());
  const at::Tensor flat = row_of * cols + col;
  mask.index_put_({flat}, at::ones({nnz}, at::kBool));
  dense.index_put_({flat}, values.to(at::kFloat));
  return {mask.view(shape), dense.view(shape)};
}

}  // namespace

CompressedModel load_compressed(const std::string& path) {
  const SafetensorsFile f = load_safetensors(path);
  const std::string& format = metadata(f, path, "format");
  TORCH_CHECK_VALUE(format == kFormat, path, " is not a swamp_ext CSR file (format '", format,
                    "', expected '", kFormat, "')");
  CompressedModel m;
  m.model = metadata(f, path, "model");
  TORCH_CHECK_VALUE(has_model(m.model), path, ": model '", m.model,
                    "' is not a built-in model (a run of your own module loads in Python: "
                    "swamp_ext.inference.from_csr(path, module=...))");
  m.input_shape = parse_shape(metadata(f, path, "input_shape"), path + ": input_shape");
  m.num_classes = parse_int(metadata(f, path, "num_classes"), path + ": num_classes");
  if (f.metadata.count("round")) m.round = parse_int(f.metadata.at("round"), path + ": round");
  ModelSpec spec;
  spec.input_shape = m.input_shape;
  spec.num_classes = m.num_classes;
  m.net = create_model(m.model, spec, 0);
  m.net->eval();
  layers::MaskMap masks;
  {
    const at::NoGradGuard no_grad;
    auto fill = [&](const std::string& name, at::Tensor& t) {
      if (f.tensors.count(name + ".values")) {
        auto [mask, dense] = densify(f, path, name, t.sizes());
        t.copy_(dense);
        masks[name] = mask;
        m.nonzeros += mask.sum().item<int64_t>();
        m.prunable += mask.numel();
        return;
      }
      const at::Tensor& v = entry(f, path, name);
      TORCH_CHECK_VALUE(v.sizes() == t.sizes(), path, ": '", name, "' is ", v.sizes(), ", the ",
                        m.model, " model's is ", t.sizes());
      t.copy_(v);
    };
    for (auto& p : m.net->named_parameters()) fill(p.key(), p.value());
    for (auto& b : m.net->named_buffers()) fill(b.key(), b.value());
  }
  layers::enable_sparse(*m.net, masks, "on", 1.0, 1.0);
  for (const auto& item : m.net->named_modules("", /*include_self=*/false)) {
    auto layer = std::dynamic_pointer_cast<layers::SparseWeightLayer>(item.value());
    if (layer && layer->is_sparse()) m.sparse_layers.push_back(item.key() + ".weight");
  }
  return m;
}

at::Tensor CompressedModel::forward(const at::Tensor& x) const {
  TORCH_CHECK_VALUE(net != nullptr, "CompressedModel: nothing loaded (load_compressed)");
  std::vector<int64_t> want{-1};
  want.insert(want.end(), input_shape.begin(), input_shape.end());
  TORCH_CHECK_VALUE(x.dim() == static_cast<int64_t>(input_shape.size()) + 1 &&
                        x.sizes().slice(1) == at::IntArrayRef(input_shape),
                    "CompressedModel: ", model, " takes [B, ", input_shape, "] inputs, got ",
                    x.sizes());
  const c10::InferenceMode guard;
  return net->forward(x.to(at::kFloat));
}

}  // namespace swamp::inference
