// The collectives of a distributed run over torch.distributed's c10d: a process group (gloo,
// NCCL), or c10d's store collectives over a TCPStore for C++ programs without Python.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <torch/csrc/distributed/c10d/GroupRegistry.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "swamp/distributed.h"

namespace swamp {
namespace {

std::string seconds(std::chrono::milliseconds t) {
  return t.count() % 1000 == 0 ? std::to_string(t.count() / 1000) + " s"
                               : std::to_string(t.count()) + " ms";
}

[[noreturn]] void failed(const std::string& who, const char* what,
                         std::chrono::milliseconds timeout, const char* why) {
  TORCH_CHECK(false, "distributed run: ", what, " across ", who, " failed (timeout ",
              seconds(timeout), "; a process died, hangs or left the run): ", why);
  throw;  // not reached
}

// Runs a collective; any failure (a peer gone, the timeout) becomes one error naming the group.
template <typename F>
auto collective(const std::string& who, const char* what, std::chrono::milliseconds timeout,
                F&& f) {
  try {
    return f();
  } catch (const c10::Error& e) {
    failed(who, what, timeout, e.what_without_backtrace());
  } catch (const std::exception& e) {
    failed(who, what, timeout, e.what());
  }
}

class ProcessGroupCollectives : public Collectives {
 public:
  ProcessGroupCollectives(c10::intrusive_ptr<c10d::ProcessGroup> group,
                          std::chrono::milliseconds timeout)
      : group_(std::move(group)), timeout_(timeout) {
    TORCH_CHECK_VALUE(group_, "distributed run: no process group");
    TORCH_CHECK_VALUE(timeout_.count() > 0, "distributed run: the timeout must be > 0");
  }
  int64_t rank() const override { return group_->getRank(); }
  int64_t size() const override { return group_->getSize(); }
  std::string describe() const override {
    return "process group (" + group_->getBackendName() + "), rank " + std::to_string(rank()) +
           " of " + std::to_string(size());
  }
  std::vector<at::Tensor> all_gather(const at::Tensor& mine) override {
    std::vector<at::Tensor> in{mine.contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int64_t r = 0; r < size(); ++r) out[0].push_back(at::empty_like(in[0]));
    c10d::AllgatherOptions opts;
    opts.timeout = timeout_;
    collective(describe(), "all-gather", timeout_, [&] {
      auto work = group_->allgather(out, in, opts);
      work->wait(timeout_);
      return 0;
    });
    return out[0];
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::chrono::milliseconds timeout_;
};

std::string env(const char* name, bool required = true) {
  const char* v = std::getenv(name);
  TORCH_CHECK_VALUE(v != nullptr || !required, "distributed run: the environment variable ", name,
                    " is not set; start the program with torchrun (or set RANK, WORLD_SIZE, "
                    "MASTER_ADDR and MASTER_PORT)");
  return v ? v : "";
}

int64_t env_int(const char* name, int64_t lo, int64_t hi) {
  const std::string v = env(name);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  TORCH_CHECK_VALUE(!v.empty() && *end == '\0' && errno == 0 && x >= lo && x <= hi,
                    "distributed run: ", name, "='", v, "' is not an integer in [", lo, ", ", hi,
                    "]");
  return x;
}

// Tensors as bytes through the store: every process writes its bytes under a fresh key, waits
// for everyone's keys and reads them (the Store API of every supported torch; torch's own
// StoreCollectives is not in torch 2.4 / 2.5).
class StoreCollectivesImpl : public Collectives {
 public:
  StoreCollectivesImpl(c10::intrusive_ptr<c10d::Store> store, int64_t rank, int64_t size,
                       std::string where, std::chrono::milliseconds timeout)
      : store_(std::move(store)),
        rank_(rank),
        size_(size),
        where_(std::move(where)),
        timeout_(timeout) {}
  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  std::string describe() const override {
    return "store " + where_ + ", rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }
  std::vector<at::Tensor> all_gather(const at::Tensor& mine) override {
    const at::Tensor t = mine.detach().to(at::kCPU).contiguous();
    const auto* p = static_cast<const uint8_t*>(t.const_data_ptr());
    const std::vector<uint8_t> bytes(p, p + t.nbytes());
    const std::string key = "swamp_ext/all_gather/" + std::to_string(calls_++) + "/";
    const auto all = collective(describe(), "all-gather", timeout_, [&] {
      store_->set(key + std::to_string(rank_), bytes);
      std::vector<std::string> keys;
      for (int64_t r = 0; r < size_; ++r) keys.push_back(key + std::to_string(r));
      store_->wait(keys, timeout_);
      std::vector<std::vector<uint8_t>> got;
      for (const auto& k : keys) got.push_back(store_->get(k));
      return got;
    });
    TORCH_CHECK(static_cast<int64_t>(all.size()) == size_, "distributed run: all-gather returned ",
                all.size(), " parts for ", size_, " processes");
    std::vector<at::Tensor> out;
    for (size_t r = 0; r < all.size(); ++r) {
      TORCH_CHECK(all[r].size() == bytes.size(), "distributed run: rank ", r, " sent ",
                  all[r].size(), " bytes where this process sent ", bytes.size(),
                  " (different models or data?)");
      at::Tensor x = at::empty_like(t);
      if (!bytes.empty()) std::memcpy(x.data_ptr(), all[r].data(), bytes.size());
      out.push_back(x.to(mine.device()));
    }
    return out;
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  int64_t rank_, size_;
  std::string where_;
  std::chrono::milliseconds timeout_;
  int64_t calls_ = 0;
};

}  // namespace

std::shared_ptr<Collectives> process_group_collectives(c10::intrusive_ptr<c10d::ProcessGroup> group,
                                                       std::chrono::milliseconds timeout) {
  return std::make_shared<ProcessGroupCollectives>(std::move(group), timeout);
}

std::shared_ptr<Collectives> process_group_collectives(const std::string& name,
                                                       std::chrono::milliseconds timeout) {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  try {
    group = c10d::resolve_process_group(name);
  } catch (const std::exception& e) {
    TORCH_CHECK_VALUE(false, "distributed run: no process group named '", name, "': ", e.what());
  }
  return process_group_collectives(std::move(group), timeout);
}

std::shared_ptr<Collectives> store_collectives_from_env(std::chrono::milliseconds timeout) {
  TORCH_CHECK_VALUE(timeout.count() > 0, "distributed run: the timeout must be > 0");
  const int64_t size = env_int("WORLD_SIZE", 1, 1 << 20);
  const int64_t rank = env_int("RANK", 0, size - 1);
  const std::string host = env("MASTER_ADDR");
  const int64_t port = env_int("MASTER_PORT", 1, std::numeric_limits<uint16_t>::max());
  // torchrun's agent hosts the store itself (TORCHELASTIC_USE_AGENT_STORE=True): every process is
  // a client. Otherwise rank 0 serves it.
  const bool agent = env("TORCHELASTIC_USE_AGENT_STORE", false) == "True";
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(port);
  opts.isServer = !agent && rank == 0;
  opts.numWorkers = static_cast<size_t>(size);
  opts.waitWorkers = !agent;
  opts.timeout = timeout;
  const std::string where = host + ":" + std::to_string(port);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(host, opts);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "distributed run: cannot reach the store at ", where, " as rank ", rank,
                " of ", size, ": ", e.what());
  }
  // a restarted job (torchrun --max-restarts) must not read the keys of the attempt before
  const std::string attempt = env("TORCHELASTIC_RESTART_COUNT", false);
  store = c10::make_intrusive<c10d::PrefixStore>(
      "swamp_ext/" + (attempt.empty() ? std::string("0") : attempt), store);
  return std::make_shared<StoreCollectivesImpl>(store, rank, size, where, timeout);
}

}  // namespace swamp
