#include "entries.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cmath>
#include <sstream>
#include <vector>

#include "../common/exact_text.h"
#include "../io/files.h"

namespace swamp::engine {

at::Tensor scalar_i(int64_t v) { return at::full({}, v, at::kLong); }
at::Tensor scalar_d(double v) { return at::full({}, v, at::kDouble); }

std::string describe(const at::Tensor& t) {
  std::ostringstream o;
  o << t.scalar_type() << " " << t.sizes();
  return o.str();
}

void save_module(TensorMap& out, const std::string& prefix, const torch::nn::Module& m) {
  for (const auto& item : m.named_parameters(true))
    out[prefix + item.key()] = item.value().detach();
  for (const auto& item : m.named_buffers(true)) out[prefix + item.key()] = item.value().detach();
}

// ---- reading a checkpoint: every entry checked before it is used ------------------------------
Entries::Entries(std::string path, TensorMap m) : path_(std::move(path)), m_(std::move(m)) {}

void Entries::damaged(const std::string& key, const std::string& what) const {
  TORCH_CHECK(false, "checkpoint ", path_, " is damaged: '", io::printable(key), "' ", what,
              "; it was not resumed. Delete it, or start over with fresh=True (--fresh)");
}

const at::Tensor& Entries::get(const std::string& key) {
  auto it = m_.find(key);
  if (it == m_.end()) damaged(key, "is missing");
  used_.insert(key);
  return it->second;
}

int64_t Entries::integer(const std::string& key, int64_t lo, int64_t hi) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != at::kLong || t.dim() != 0)
    damaged(key, "must be an int64 scalar, is " + describe(t));
  const int64_t v = t.item<int64_t>();
  if (v < lo || v > hi)
    damaged(key, "is " + std::to_string(v) + ", outside [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return v;
}

double Entries::real(const std::string& key, double lo, double hi) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != at::kDouble || t.dim() != 0)
    damaged(key, "must be a float64 scalar, is " + describe(t));
  const double v = t.item<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    damaged(key, "is " + exact_text(v) + ", not a finite value in [" + exact_text(lo) + ", " +
                     exact_text(hi) + "]");
  return v;
}

std::string Entries::text(const std::string& key) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != at::kByte || t.dim() != 1) damaged(key, "must be text, is " + describe(t));
  return tensor_string(t);
}

const at::Tensor& Entries::like(const std::string& key, const at::Tensor& model) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != model.scalar_type() || t.sizes() != model.sizes())
    damaged(key, "is " + describe(t) + " where the model has " + describe(model));
  if (at::isFloatingType(t.scalar_type()) && !t.isfinite().all().item<bool>())
    damaged(key, "holds non-finite values");
  return t;
}

void Entries::expect_all_used() const {
  for (const auto& kv : m_)
    if (!used_.count(kv.first)) damaged(kv.first, "is not an entry this checkpoint can have");
}

void load_module(Entries& e, const std::string& prefix, torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& item : m.named_parameters(true))
    item.value().copy_(e.like(prefix + item.key(), item.value()));
  for (auto& item : m.named_buffers(true)) {
    const std::string key = prefix + item.key();
    const at::Tensor& t = e.like(key, item.value());
    const bool var = key.size() >= 11 && key.compare(key.size() - 11, 11, "running_var") == 0;
    if ((var || !at::isFloatingType(t.scalar_type())) && t.numel() > 0 &&
        t.lt(0).any().item<bool>())
      e.damaged(key, "holds negative values");
    item.value().copy_(t);
  }
}

bool nonzero_outside(const at::Tensor& t, const at::Tensor& mask) {
  const at::Tensor off = mask.logical_not();
  if (t.sizes() == mask.sizes()) return t.ne(0).logical_and(off).any().item<bool>();
  if (t.dim() == mask.dim() && mask.dim() > 0 && mask.size(0) > 0 &&
      t.size(0) % mask.size(0) == 0 && t.sizes().slice(1) == mask.sizes().slice(1)) {
    std::vector<int64_t> shape{t.size(0) / mask.size(0)};
    for (int64_t d : mask.sizes()) shape.push_back(d);
    return t.reshape(shape).ne(0).logical_and(off.unsqueeze(0)).any().item<bool>();
  }
  return false;  // another layout (a sparse layer's values): checked through the optimizer
}

}  // namespace swamp::engine
