#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <mutex>

#include "swamp/data.h"

namespace swamp {

std::vector<int64_t> Dataset::input_shape() const {
  std::vector<int64_t> s;
  for (int64_t d = 1; d < x_train.dim(); ++d) s.push_back(x_train.size(d));
  return s;
}

namespace {
void check_split(const at::Tensor& x, const at::Tensor& y, const char* xn, const char* yn,
                 int64_t num_classes, const c10::Device& dev) {
  TORCH_CHECK_VALUE(x.defined() && y.defined(), "dataset: ", xn, " and ", yn, " must be given");
  TORCH_CHECK_TYPE(x.is_floating_point(), "dataset: ", xn, " must be a floating-point tensor, got ",
                   x.scalar_type());
  TORCH_CHECK_TYPE(y.scalar_type() == at::kLong, "dataset: ", yn, " must be int64 labels, got ",
                   y.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 2, "dataset: ", xn, " must be [N, ...] with N samples, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(y.dim() == 1, "dataset: ", yn, " must be one-dimensional, got shape ",
                    y.sizes());
  TORCH_CHECK_VALUE(x.size(0) == y.size(0), "dataset: ", xn, " has ", x.size(0), " samples but ",
                    yn, " has ", y.size(0));
  TORCH_CHECK_VALUE(x.size(0) > 0, "dataset: ", xn, " is empty");
  TORCH_CHECK_VALUE(x.device() == dev && y.device() == dev, "dataset: ", xn, " and ", yn,
                    " must be on the same device as x_train (", dev, ")");
  TORCH_CHECK_VALUE(at::isfinite(x).all().item<bool>(), "dataset: ", xn,
                    " contains NaN or infinite values");
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi < num_classes, "dataset: ", yn, " has labels in [", lo, ", ", hi,
                    "] but num_classes is ", num_classes, " (labels must be in [0, num_classes))");
}
}  // namespace

void validate_dataset(const Dataset& d, int64_t min_train) {
  TORCH_CHECK_VALUE(d.num_classes >= 2, "dataset: num_classes must be >= 2, got ", d.num_classes);
  TORCH_CHECK_VALUE(d.x_train.defined(), "dataset: x_train must be given");
  const c10::Device dev = d.x_train.device();
  check_split(d.x_train, d.y_train, "x_train", "y_train", d.num_classes, dev);
  check_split(d.x_test, d.y_test, "x_test", "y_test", d.num_classes, dev);
  TORCH_CHECK_VALUE(d.x_test.sizes().slice(1) == d.x_train.sizes().slice(1),
                    "dataset: x_test samples have shape ", d.x_test.sizes().slice(1),
                    " but x_train samples have shape ", d.x_train.sizes().slice(1));
  TORCH_CHECK_VALUE(d.x_train.size(0) >= min_train, "dataset: x_train has ", d.x_train.size(0),
                    " samples, fewer than one batch (", min_train, ")");
}

Dataset dataset_to(const Dataset& d, const c10::Device& device) {
  Dataset o = d;
  o.x_train = d.x_train.to(device).contiguous();
  o.y_train = d.y_train.to(device).contiguous();
  o.x_test = d.x_test.to(device).contiguous();
  o.y_test = d.y_test.to(device).contiguous();
  return o;
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t hash_seed(uint64_t seed, int64_t round, int64_t particle, uint64_t stream) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<uint64_t>(round + 1));
  h = splitmix64(h ^ static_cast<uint64_t>(particle + 1) * 0xD6E8FEB86659FD93ull);
  h = splitmix64(h ^ stream);
  return h >> 1;  // generators take a seed that fits in int64 on some paths
}

BatchOrder::BatchOrder(int64_t n, uint64_t seed)
    : n_(n), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

const at::Tensor& BatchOrder::epoch(int64_t epoch) {
  TORCH_CHECK(epoch >= current_, "BatchOrder: epochs must be asked for in increasing order");
  while (current_ < epoch) {
    perm_ = at::randperm(n_, gen_, at::TensorOptions().dtype(at::kLong));
    ++current_;
  }
  return perm_;
}

BatchOrder::State BatchOrder::state() const {
  at::Generator g = gen_;
  std::lock_guard<std::mutex> lock(g.mutex());
  return State{g.get_state(), perm_.defined() ? perm_.clone() : perm_, current_};
}

void BatchOrder::restore(const State& s) {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_state(s.generator);
  perm_ = s.perm;
  current_ = s.current;
}

}  // namespace swamp
