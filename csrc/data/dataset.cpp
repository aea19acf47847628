#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/util/Exception.h>

#include <cmath>
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
  TORCH_CHECK_TYPE(x.is_floating_point() || x.scalar_type() == at::kByte, "dataset: ", xn,
                   " must be a floating-point or uint8 tensor, got ", x.scalar_type());
  TORCH_CHECK_TYPE(y.scalar_type() == at::kLong, "dataset: ", yn, " must be int64 labels, got ",
                   y.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 2, "dataset: ", xn, " must be [N, ...] with N samples, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(y.dim() == 1, "dataset: ", yn, " must be one-dimensional, got shape ",
                    y.sizes());
  TORCH_CHECK_VALUE(x.size(0) > 0, "dataset: ", xn, " is empty");
  TORCH_CHECK_VALUE(x.size(0) == y.size(0), "dataset: ", xn, " has ", x.size(0), " samples but ",
                    yn, " has ", y.size(0));
  TORCH_CHECK_VALUE(x.device() == dev && y.device() == dev, "dataset: ", xn, " and ", yn,
                    " must be on the same device as x_train (", dev, ")");
  TORCH_CHECK_VALUE(!x.is_floating_point() || at::isfinite(x).all().item<bool>(), "dataset: ", xn,
                    " contains NaN or infinite values");
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  TORCH_CHECK_VALUE(lo >= 0 && hi < num_classes, "dataset: ", yn, " has labels in [", lo, ", ", hi,
                    "]; labels must be in [0, ", num_classes, ") (num_classes ", num_classes, ")");
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
  TORCH_CHECK_TYPE(d.x_test.scalar_type() == d.x_train.scalar_type(), "dataset: x_test is ",
                   d.x_test.scalar_type(), " but x_train is ", d.x_train.scalar_type());
  TORCH_CHECK_VALUE(d.mean.size() == d.std.size(), "dataset: mean and std differ in length");
  if (!d.mean.empty()) {
    TORCH_CHECK_VALUE(
        d.x_train.dim() == 4 && d.x_train.size(1) == static_cast<int64_t>(d.mean.size()),
        "dataset: mean/std have ", d.mean.size(),
        " entries but the inputs are not [N, C, H, W] images with that many channels");
    for (size_t c = 0; c < d.std.size(); ++c)
      TORCH_CHECK_VALUE(std::isfinite(d.mean[c]) && std::isfinite(d.std[c]) && d.std[c] > 0,
                        "dataset: std must be positive and mean/std finite (channel ", c, ")");
  }
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

InputPipeline::InputPipeline(const Dataset& d, Augment augment) : aug_(augment) {
  TORCH_CHECK_VALUE(aug_.crop_padding >= 0, "crop_padding must be >= 0");
  if (!d.mean.empty()) {
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(d.x_train.device());
    const int64_t c = static_cast<int64_t>(d.mean.size());
    mean_ = at::tensor(std::vector<float>(d.mean.begin(), d.mean.end()), opts).view({1, c, 1, 1});
    std_ = at::tensor(std::vector<float>(d.std.begin(), d.std.end()), opts).view({1, c, 1, 1});
  }
}

at::Tensor InputPipeline::operator()(const at::Tensor& in, at::Generator* gen, int64_t batch,
                                     int64_t offset) const {
  at::Tensor x = in.scalar_type() == at::kByte ? in.to(at::kFloat).div_(255.0) : in;
  if (gen != nullptr && x.dim() == 4 && (aug_.crop_padding > 0 || aug_.flip)) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    const int64_t drawn = batch < 0 ? b : batch;
    TORCH_CHECK(offset >= 0 && offset + b <= drawn, "InputPipeline: samples [", offset, ", ",
                offset + b, ") of a batch of ", drawn);
    const auto cpu_long = at::TensorOptions().dtype(at::kLong);
    // draws for the whole batch, this part's kept
    auto mine = [&](const at::Tensor& t) { return drawn == b ? t : t.narrow(0, offset, b); };
    if (aug_.crop_padding > 0) {
      const int64_t p = aug_.crop_padding;
      at::Tensor padded = at::constant_pad_nd(x, {p, p, p, p}, 0.0);
      at::Tensor dy = mine(at::randint(0, 2 * p + 1, {drawn}, *gen, cpu_long)).to(x.device());
      at::Tensor dx = mine(at::randint(0, 2 * p + 1, {drawn}, *gen, cpu_long)).to(x.device());
      at::Tensor rows = (dy.view({b, 1}) + at::arange(h, dy.options())).view({b, 1, h, 1});
      at::Tensor cols = (dx.view({b, 1}) + at::arange(w, dx.options())).view({b, 1, 1, w});
      x = padded.gather(2, rows.expand({b, c, h, w + 2 * p})).gather(3, cols.expand({b, c, h, w}));
    }
    if (aug_.flip) {
      at::Tensor f = mine(at::rand({drawn}, *gen, at::TensorOptions().dtype(at::kFloat))).lt(0.5);
      x = at::where(f.to(x.device()).view({b, 1, 1, 1}), x.flip({3}), x);
    }
  }
  if (mean_.defined()) x = (x - mean_) / std_;
  return x;
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
