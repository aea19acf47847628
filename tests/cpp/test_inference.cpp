// Sparse inference from C++: the swamp:: operators against ATen's dense ones (called directly
// and through the dispatcher), and a compressed model file written here loaded and run without
// Python.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/nn.h>

#include <cstdio>
#include <map>
#include <string>

#include "swamp/inference.h"
#include "swamp/models.h"
#include "swamp/safetensors.h"
#include "unit.h"

namespace {

struct Csr {
  at::Tensor crow, col, values;
};
// The CSR arrays of a weight seen as [rows, rest], by a plain loop.
Csr csr(const at::Tensor& w) {
  const at::Tensor m = w.reshape({w.size(0), -1}).contiguous();
  std::vector<int64_t> crow{0}, col;
  std::vector<float> vals;
  for (int64_t r = 0; r < m.size(0); ++r) {
    for (int64_t c = 0; c < m.size(1); ++c) {
      const float v = m[r][c].item<float>();
      if (v != 0.0f) {
        col.push_back(c);
        vals.push_back(v);
      }
    }
    crow.push_back(static_cast<int64_t>(col.size()));
  }
  return {at::tensor(crow, at::kLong), at::tensor(col, at::kLong), at::tensor(vals, at::kFloat)};
}

at::Tensor pruned(at::IntArrayRef shape, double density) {
  return at::randn(shape) * (at::rand(shape) < density);
}

}  // namespace

UNIT_TEST(sparse_linear_equals_the_dense_product_directly_and_through_the_dispatcher) {
  at::manual_seed(3);
  const at::Tensor w = pruned({13, 21}, 0.2), b = at::randn({13}), x = at::randn({6, 21});
  const Csr c = csr(w);
  const at::Tensor want = at::linear(x, w, b);
  EXPECT(at::allclose(swamp::inference::sparse_linear(x, c.crow, c.col, c.values, b, 21), want,
                      1e-5, 1e-6));
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("swamp::sparse_linear", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, const std::optional<at::Tensor>&, int64_t)>();
  EXPECT(at::allclose(op.call(x, c.crow, c.col, c.values, b, 21), want, 1e-5, 1e-6));
  EXPECT_THROWS(c10::ValueError,
                swamp::inference::sparse_linear(x, c.crow, c.col.fill_(21), c.values, b, 21));
}

UNIT_TEST(sparse_conv2d_equals_the_dense_convolution_with_strides) {
  at::manual_seed(4);
  const at::Tensor w = pruned({5, 3, 3, 3}, 0.3), x = at::randn({2, 3, 9, 8});
  const Csr c = csr(w);
  for (int64_t s : {1, 2}) {
    const at::Tensor got = swamp::inference::sparse_conv2d(x, c.crow, c.col, c.values, std::nullopt,
                                                           w.sizes(), {s, s}, {1, 1});
    EXPECT(at::allclose(got, at::conv2d(x, w, {}, {s, s}, {1, 1}), 1e-5, 1e-6));
  }
}

namespace {
// Writes `name`'s weights as swamp_ext's CSR file does and returns the dense model it holds.
swamp::ModelPtr write_compressed(const std::string& name, const std::vector<int64_t>& shape,
                                 const std::string& path, const std::string& input_shape) {
  swamp::ModelSpec spec;
  spec.input_shape = shape;
  spec.num_classes = 10;
  auto net = swamp::create_model(name, spec, 1);
  std::map<std::string, at::Tensor> tensors;
  const at::NoGradGuard no_grad;
  const auto prunable = swamp::prunable_parameter_names(*net);
  for (auto& p : net->named_parameters()) {
    if (std::find(prunable.begin(), prunable.end(), p.key()) != prunable.end()) {
      p.value().mul_(at::rand(p.value().sizes()) < 0.1);
      const Csr c = csr(p.value());
      tensors[p.key() + ".values"] = c.values;
      tensors[p.key() + ".crow_indices"] = c.crow.to(at::kInt);
      tensors[p.key() + ".col_indices"] = c.col.to(at::kInt);
    } else {
      tensors[p.key()] = p.value().clone();
    }
  }
  for (auto& b : net->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
    tensors[b.key()] = b.value().clone();
  }
  swamp::save_safetensors(path, tensors,
                          {{"format", "swamp_ext-csr-1"},
                           {"model", name},
                           {"input_shape", input_shape},
                           {"num_classes", "10"},
                           {"round", "3"}});
  net->eval();
  return net;
}
}  // namespace

UNIT_TEST(a_compressed_model_file_runs_without_python_with_the_dense_outputs) {
  at::manual_seed(5);
  const std::string path = "swamp_unit_compressed.safetensors";
  for (const auto& [name, shape, text] :
       std::vector<std::tuple<std::string, std::vector<int64_t>, std::string>>{
           {"lenet_300_100", {1, 28, 28}, "[1, 28, 28]"}, {"resnet20", {3, 32, 32}, "[3,32,32]"}}) {
    auto dense = write_compressed(name, shape, path, text);
    const auto m = swamp::inference::load_compressed(path);
    EXPECT(m.model == name && m.input_shape == shape && m.num_classes == 10 && m.round == 3);
    EXPECT(!m.sparse_layers.empty() && m.nonzeros > 0 && m.nonzeros < m.prunable / 5);
    std::vector<int64_t> xs{4};
    xs.insert(xs.end(), shape.begin(), shape.end());
    const at::Tensor x = at::randn(xs);
    at::Tensor want;
    {
      const at::NoGradGuard no_grad;
      want = dense->forward(x);
    }
    EXPECT(at::allclose(m.forward(x), want, 1e-4, 1e-5));
    EXPECT_THROWS(c10::ValueError, m.forward(at::randn({2, 5})));
  }
  // a file without the input shape, and one with an index out of range, are refused by name
  write_compressed("lenet_300_100", {1, 28, 28}, path, "[1, 28]");
  EXPECT_THROWS(c10::ValueError, swamp::inference::load_compressed(path));
  auto f = swamp::load_safetensors(path);
  f.metadata["input_shape"] = "[1, 28, 28]";
  f.tensors["fc1.weight.col_indices"].fill_(784);
  swamp::save_safetensors(path, f.tensors, f.metadata);
  try {
    swamp::inference::load_compressed(path);
    EXPECT(false);
  } catch (const c10::ValueError& e) {
    EXPECT(std::string(e.what()).find("fc1.weight") != std::string::npos);
  }
  f.metadata.erase("input_shape");
  swamp::save_safetensors(path, f.tensors, f.metadata);
  EXPECT_THROWS(c10::ValueError, swamp::inference::load_compressed(path));
  std::remove(path.c_str());
}
