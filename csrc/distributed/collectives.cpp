// The collectives of a distributed run over torch.distributed's c10d: a process group (gloo,
// NCCL), or c10d's store collectives over a TCPStore for C++ programs without Python.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
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

// Gradients are summed in buckets of about this many bytes (as DistributedDataParallel does):
// one flat buffer each, sent while the next is filled.
constexpr int64_t kBucketBytes = 25 << 20;

// `tensors` grouped into flat buckets of one dtype and device, at most kBucketBytes each (a larger
// tensor is a bucket of its own): the indices of the tensors in each bucket.
std::vector<std::vector<size_t>> buckets_of(const std::vector<at::Tensor>& tensors) {
  std::vector<std::vector<size_t>> out;
  std::map<std::pair<int, std::string>, size_t> open;  // (dtype, device) -> bucket being filled
  std::vector<int64_t> bytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const auto key = std::make_pair(static_cast<int>(t.scalar_type()), t.device().str());
    auto it = open.find(key);
    const int64_t b = static_cast<int64_t>(t.nbytes());
    if (it == open.end() || bytes[it->second] + b > kBucketBytes) {
      out.emplace_back();
      bytes.push_back(0);
      it = open.insert_or_assign(key, out.size() - 1).first;
    }
    out[it->second].push_back(i);
    bytes[it->second] += b;
  }
  return out;
}

at::Tensor flat(const std::vector<at::Tensor>& tensors, const std::vector<size_t>& which) {
  std::vector<at::Tensor> parts;
  for (size_t i : which) parts.push_back(tensors[i].reshape({-1}));
  return parts.size() == 1 ? parts[0].clone() : at::cat(parts);
}

void unflat(const at::Tensor& sum, std::vector<at::Tensor>& tensors,
            const std::vector<size_t>& which) {
  int64_t at = 0;
  for (size_t i : which) {
    const int64_t n = tensors[i].numel();
    tensors[i].copy_(sum.narrow(0, at, n).view(tensors[i].sizes()));
    at += n;
  }
}

class ProcessGroupCollectives : public Collectives {
 public:
  using Subgroups =
      std::vector<std::pair<std::vector<int64_t>, c10::intrusive_ptr<c10d::ProcessGroup>>>;
  ProcessGroupCollectives(c10::intrusive_ptr<c10d::ProcessGroup> group,
                          std::chrono::milliseconds timeout, Subgroups subgroups)
      : group_(std::move(group)), timeout_(timeout), subgroups_(std::move(subgroups)) {
    TORCH_CHECK_VALUE(group_, "distributed run: no process group");
    TORCH_CHECK_VALUE(timeout_.count() > 0, "distributed run: the timeout must be > 0");
    for (const auto& [ranks, pg] : subgroups_) {
      TORCH_CHECK_VALUE(pg, "distributed run: no process group given for ranks ", ranks);
      TORCH_CHECK_VALUE(static_cast<int64_t>(ranks.size()) == pg->getSize(),
                        "distributed run: the process group for ranks ", ranks, " has ",
                        pg->getSize(), " processes");
    }
  }
  void all_reduce_sum(std::vector<at::Tensor>& tensors) override {
    std::vector<std::vector<size_t>> buckets = buckets_of(tensors);
    std::vector<std::vector<at::Tensor>> flats(buckets.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = timeout_;
    collective(describe(), "gradient all-reduce", timeout_, [&] {
      for (size_t k = 0; k < buckets.size(); ++k) {  // each bucket sent as soon as it is filled
        flats[k] = {flat(tensors, buckets[k])};
        works.push_back(group_->allreduce(flats[k], opts));
      }
      for (auto& w : works) w->wait(timeout_);
      return 0;
    });
    for (size_t k = 0; k < buckets.size(); ++k) unflat(flats[k][0], tensors, buckets[k]);
  }
  PendingSum start_all_reduce_sum(const at::Tensor& flat) override {
    TORCH_CHECK_VALUE(flat.is_contiguous() && flat.dim() == 1,
                      "start_all_reduce_sum: a flat contiguous tensor is summed, got sizes ",
                      flat.sizes());
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = timeout_;
    auto tensors = std::make_shared<std::vector<at::Tensor>>(std::vector<at::Tensor>{flat});
    auto work = collective(describe(), "gradient all-reduce", timeout_,
                           [&] { return group_->allreduce(*tensors, opts); });
    // when the sum completed, recorded by the backend's thread (where it offers a future)
    auto done = std::make_shared<std::atomic<int64_t>>(0);
    try {
      work->getFuture()->addCallback([done](c10::ivalue::Future&) {
        done->store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
      });
    } catch (const std::exception&) {  // no future: the time wait() returns stands for it
    }
    const std::string who = describe();
    const auto timeout = timeout_;
    return PendingSum(
        [work, tensors, who, timeout] {
          collective(who, "gradient all-reduce", timeout, [&] {
            work->wait(timeout);
            return 0;
          });
        },
        done);
  }
  std::shared_ptr<Collectives> subgroup(const std::vector<int64_t>& ranks) override {
    for (const auto& [r, pg] : subgroups_)
      if (r == ranks) {
        TORCH_CHECK(pg->getRank() >= 0 && pg->getRank() < pg->getSize(), "distributed run: rank ",
                    rank(), " is not in the process group for ranks ", ranks);
        return std::make_shared<ProcessGroupCollectives>(pg, timeout_, Subgroups{});
      }
    TORCH_CHECK_VALUE(false, "distributed run: no process group for the ranks ", ranks,
                      " that train one particle together (", describe(),
                      "); create one per group of swamp::data_parallel_groups with "
                      "torch.distributed.new_group and pass them to process_group_collectives "
                      "(swamp_ext.run_imp does)");
    return nullptr;
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
  Subgroups subgroups_;
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
      // Everyone wrote this call's key, so everyone has read the call before: this process's
      // bytes of it go (the store holds at most two calls, not every step of a run).
      if (!last_key_.empty()) store_->deleteKey(last_key_);
      last_key_ = key + std::to_string(rank_);
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
  std::shared_ptr<Collectives> subgroup(const std::vector<int64_t>& ranks) override {
    const auto it = std::find(ranks.begin(), ranks.end(), rank_);
    TORCH_CHECK_VALUE(it != ranks.end(), "distributed run: rank ", rank_,
                      " asked for the collectives of ranks ", ranks, " without being one of them");
    std::string name = "group";
    for (int64_t r : ranks) name += "_" + std::to_string(r);
    return std::make_shared<StoreCollectivesImpl>(
        c10::make_intrusive<c10d::PrefixStore>(name, store_), it - ranks.begin(),
        static_cast<int64_t>(ranks.size()), where_ + " (" + name + ")", timeout_);
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  int64_t rank_, size_;
  std::string where_;
  std::chrono::milliseconds timeout_;
  int64_t calls_ = 0;
  std::string last_key_;
};

c10::intrusive_ptr<c10d::ProcessGroup> resolved(const std::string& name) {
  try {
    return c10d::resolve_process_group(name);
  } catch (const std::exception& e) {
    TORCH_CHECK_VALUE(false, "distributed run: no process group named '", name, "': ", e.what());
  }
  return {};
}

}  // namespace

void Collectives::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  for (const auto& which : buckets_of(tensors)) {
    const std::vector<at::Tensor> all = all_gather(flat(tensors, which));
    at::Tensor sum = all[0].clone();
    for (size_t r = 1; r < all.size(); ++r) sum.add_(all[r]);  // in rank order, everywhere
    unflat(sum, tensors, which);
  }
}

PendingSum Collectives::start_all_reduce_sum(const at::Tensor& flat) {
  std::vector<at::Tensor> one{flat};
  all_reduce_sum(one);
  return PendingSum();
}

std::shared_ptr<Collectives> Collectives::subgroup(const std::vector<int64_t>& ranks) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "distributed run: ", describe(),
                              " cannot make the collectives of the ranks ", ranks,
                              " (needed to train one particle on several processes)");
  return nullptr;
}

std::shared_ptr<Collectives> process_group_collectives(
    c10::intrusive_ptr<c10d::ProcessGroup> group, std::chrono::milliseconds timeout,
    std::vector<std::pair<std::vector<int64_t>, c10::intrusive_ptr<c10d::ProcessGroup>>>
        subgroups) {
  return std::make_shared<ProcessGroupCollectives>(std::move(group), timeout, std::move(subgroups));
}

std::shared_ptr<Collectives> process_group_collectives(
    const std::string& name, std::chrono::milliseconds timeout,
    const std::vector<std::pair<std::vector<int64_t>, std::string>>& subgroups) {
  std::vector<std::pair<std::vector<int64_t>, c10::intrusive_ptr<c10d::ProcessGroup>>> groups;
  for (const auto& [ranks, sub] : subgroups) groups.emplace_back(ranks, resolved(sub));
  return process_group_collectives(resolved(name), timeout, std::move(groups));
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
