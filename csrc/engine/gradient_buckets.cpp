#include "gradient_buckets.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/types.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "swamp/distributed.h"

namespace swamp {
namespace {
std::mutex stats_mutex;
GradientSyncStats stats;
}  // namespace

GradientSyncStats gradient_sync_stats(bool reset) {
  std::lock_guard<std::mutex> lock(stats_mutex);
  const GradientSyncStats out = stats;
  if (reset) stats = GradientSyncStats{};
  return out;
}

namespace engine {
namespace {
using Clock = PendingSum::Clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Bucket assignment as DDP's: the parameters in reverse order, grouped by dtype and device; a
// bucket is closed once it holds at least its limit of bytes (the first bucket's limit small).
std::vector<std::vector<size_t>> assign(const std::vector<at::Tensor>& params, int64_t first_bytes,
                                        int64_t bytes) {
  std::vector<std::vector<size_t>> out;
  std::map<std::pair<int, std::string>, std::pair<size_t, int64_t>> open;  // -> (bucket, bytes)
  for (size_t k = params.size(); k-- > 0;) {
    const at::Tensor& t = params[k];
    const auto key = std::make_pair(static_cast<int>(t.scalar_type()), t.device().str());
    auto it = open.find(key);
    if (it == open.end()) {
      out.emplace_back();
      it = open.emplace(key, std::make_pair(out.size() - 1, int64_t{0})).first;
    }
    auto& [bucket, filled] = it->second;
    out[bucket].push_back(k);
    filled += static_cast<int64_t>(t.nbytes());
    if (filled >= (out.size() == 1 ? first_bytes : bytes)) open.erase(it);
  }
  return out;
}
}  // namespace

struct GradientBuckets::Hook : torch::autograd::FunctionPostHook {
  Hook(GradientBuckets* owner, size_t param) : owner(owner), param(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& inputs) override {
    (void)inputs;
    owner->ready(param);
    return outputs;
  }
  GradientBuckets* owner;
  size_t param;
};

GradientBuckets::GradientBuckets(std::vector<at::Tensor> params, Start start,
                                 int64_t first_bucket_bytes, int64_t bucket_bytes)
    : params_(std::move(params)), start_(std::move(start)) {
  TORCH_CHECK(start_, "GradientBuckets: no way to start a sum");
  buckets_ = assign(params_, first_bucket_bytes, bucket_bytes);
  bucket_of_.resize(params_.size());
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t k : buckets_[b]) bucket_of_[k] = b;
  missing_.assign(buckets_.size(), 0);
  for (size_t k = 0; k < params_.size(); ++k) {
    const at::Tensor& p = params_[k];
    TORCH_CHECK(p.is_leaf() && p.requires_grad(), "GradientBuckets: parameter ", k,
                " is not a leaf that requires a gradient");
    auto acc = torch::autograd::impl::grad_accumulator(p);
    TORCH_CHECK(acc, "GradientBuckets: parameter ", k, " has no gradient accumulator");
    const uintptr_t key = acc->add_post_hook(std::make_unique<Hook>(this, k));
    torch::autograd::Node* node = acc.get();
    unhook_.push_back([node, key] { node->del_post_hook(key); });
    // the accumulator lives as long as the hooks on it (a parameter holds it only weakly); held
    // type-erased: grad_accumulator returns a shared_ptr or an intrusive_ptr by torch release
    accumulators_.push_back(std::shared_ptr<void>(
        new decltype(acc)(acc), [](void* q) { delete static_cast<decltype(acc)*>(q); }));
  }
}

GradientBuckets::~GradientBuckets() {
  for (auto& pending : pending_) {  // sums still travelling (an error mid-step): let them land
    try {
      pending.wait();
    } catch (...) {
    }
  }
  for (auto& unhook : unhook_) unhook();
}

void GradientBuckets::prepare() {
  for (size_t b = 0; b < buckets_.size(); ++b)
    missing_[b] = static_cast<int64_t>(buckets_[b].size());
  next_ = 0;
  flats_.assign(buckets_.size(), at::Tensor());
  pending_.clear();
  started_at_.clear();
  in_step_ = true;
}

void GradientBuckets::ready(size_t param) {
  std::lock_guard<std::mutex> lock(mutex_);  // backward may run hooks on a device's thread
  if (!in_step_) return;  // a backward outside a data-parallel step (none in the trainer)
  const size_t b = bucket_of_[param];
  if (--missing_[b] == 0) start_ready_buckets(false);
}

void GradientBuckets::start_ready_buckets(bool all) {
  torch::NoGradGuard no_grad;
  while (next_ < buckets_.size() && (all || missing_[next_] <= 0)) {
    std::vector<at::Tensor> parts;
    for (size_t k : buckets_[next_]) {
      at::Tensor& g = params_[k].mutable_grad();
      if (!g.defined()) g = at::zeros_like(params_[k]);
      parts.push_back(g.reshape({-1}));
    }
    flats_[next_] = parts.size() == 1 ? parts[0].clone() : at::cat(parts);
    const Clock::time_point t0 = Clock::now();
    started_at_.push_back(t0);
    pending_.push_back(start_(flats_[next_]));
    blocked_ += Clock::now() - t0;  // a sum that cannot travel alone blocks here
    ++next_;
  }
}

void GradientBuckets::finish() {
  TORCH_CHECK(in_step_, "GradientBuckets::finish without prepare");
  start_ready_buckets(true);
  const Clock::time_point t0 = Clock::now();
  for (auto& pending : pending_) pending.wait();
  const Clock::time_point t1 = Clock::now();
  {
    torch::NoGradGuard no_grad;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      int64_t at = 0;
      for (size_t k : buckets_[b]) {
        at::Tensor& g = params_[k].mutable_grad();
        const int64_t n = g.numel();
        g.copy_(flats_[b].narrow(0, at, n).view(g.sizes()));
        at += n;
      }
    }
  }
  // the time some sum of this step was travelling: the union of the buckets' [start, done]
  Clock::duration in_flight{};
  double bytes = 0.0;
  Clock::time_point open_from{}, open_to{};
  for (size_t b = 0; b < pending_.size(); ++b) {
    bytes += static_cast<double>(flats_[b].nbytes());
    const Clock::time_point from = started_at_[b], to = std::max(from, pending_[b].done_at());
    if (b == 0 || from > open_to) {
      if (b > 0) in_flight += open_to - open_from;
      open_from = from;
      open_to = to;
    } else {
      open_to = std::max(open_to, to);
    }
  }
  if (!pending_.empty()) in_flight += open_to - open_from;
  // the backend stamps a sum done before the waiting thread wakes: what the thread waited for
  // was in flight all the same
  const Clock::duration blocked = blocked_ + (t1 - t0);
  in_flight = std::max(in_flight, blocked);
  {
    std::lock_guard<std::mutex> lock(stats_mutex);
    stats.steps += 1;
    stats.buckets += static_cast<int64_t>(buckets_.size());
    stats.bytes += bytes;
    stats.in_flight_s += seconds(in_flight);
    stats.blocked_s += seconds(blocked);
  }
  blocked_ = Clock::duration::zero();
  pending_.clear();
  flats_.assign(buckets_.size(), at::Tensor());
  in_step_ = false;
}

}  // namespace engine
}  // namespace swamp
