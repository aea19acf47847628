// The one-process defaults of the processes seam (swamp/processes.h) and the layout rule.
#include "swamp/processes.h"

#include <c10/util/Exception.h>

namespace swamp {

PendingSum::PendingSum()
    : done_(std::make_shared<std::atomic<int64_t>>(0)), waited_(Clock::now()) {}

PendingSum::PendingSum(std::function<void()> wait, std::shared_ptr<std::atomic<int64_t>> done)
    : wait_(std::move(wait)), done_(std::move(done)) {
  if (!done_) done_ = std::make_shared<std::atomic<int64_t>>(0);
}

void PendingSum::wait() {
  if (wait_) {
    auto w = std::move(wait_);
    wait_ = nullptr;
    w();
    waited_ = Clock::now();
  }
}

PendingSum::Clock::time_point PendingSum::done_at() const {
  const int64_t ns = done_->load();
  if (ns == 0) return waited_;
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

PendingSum Processes::start_sum_in_group(int64_t n, const at::Tensor& flat) {
  std::vector<at::Tensor> one{flat};
  sum_in_group(n, one);
  return PendingSum();
}

std::vector<at::Tensor> Processes::gather(const std::vector<at::Tensor>& local, int64_t n) {
  TORCH_CHECK_VALUE(static_cast<int64_t>(local.size()) == n, "gather: ", local.size(),
                    " particles here, expected all ", n);
  return local;
}

std::vector<std::vector<int64_t>> data_parallel_groups(int64_t world, int64_t n) {
  TORCH_CHECK_VALUE(world >= 1 && n >= 1, "data_parallel_groups: ", world, " processes, ", n,
                    " particles");
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(n));
  if (n >= world) {
    for (int64_t r = 0; r < world; ++r)
      for (int64_t p = r * n / world; p < (r + 1) * n / world; ++p) out[p] = {r};
    return out;
  }
  const int64_t g = world / n;
  for (int64_t p = 0; p < n; ++p)
    for (int64_t r = p * g; r < (p + 1) * g; ++r) out[p].push_back(r);
  return out;
}

}  // namespace swamp
