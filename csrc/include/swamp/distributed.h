// Particles spread over processes (torchrun: one process per GPU, or several on a CPU machine):
// the averaging seam (swamp/averaging.h) implemented over torch.distributed's c10d.
//
// Each process trains a contiguous share of every round's particles (process r of P gets
// particles [r * n / P, (r + 1) * n / P)); with more processes than particles, groups of P / n
// processes train one particle data-parallel (each its shard of every batch, the gradients
// summed in the group every step; see data_parallel_groups). After training, the particles'
// solutions, evaluation outputs and losses are all-gathered through the process group and every
// process sums them in particle order, exactly as one process holding all particles would. Masks,
// the average, its batch-norm statistics and the next round's mask are then computed identically
// everywhere. Only the primary process (rank 0) writes checkpoints; every process can resume from
// them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "swamp/export.h"
#include "swamp/processes.h"

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace swamp {

// The processes of a distributed run and the one collective the engine needs. Every call is a
// collective: all processes make the same calls in the same order; a process that died or hangs
// turns into an error after `timeout`, never a silent wait.
class SWAMP_API Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // Every process's `mine` (same shape and dtype everywhere), in rank order, on mine's device.
  virtual std::vector<at::Tensor> all_gather(const at::Tensor& mine) = 0;
  // Sums `tensors` in place over all processes (the same shapes and dtypes everywhere), and the
  // sums are bitwise the same in every process. Default: the tensors flattened by dtype,
  // all-gathered and summed in rank order.
  virtual void all_reduce_sum(std::vector<at::Tensor>& tensors);
  // Starts summing one flat tensor in place over all processes (the same sizes everywhere, the
  // same calls in the same order); the sum is bitwise the same in every process once waited
  // for. Default: summed now with all_reduce_sum, returned complete. A process group sends it
  // asynchronously (c10d work), completed by PendingSum::wait.
  virtual PendingSum start_all_reduce_sum(const at::Tensor& flat);
  // The collectives of the processes `ranks` (ranks of this group, ascending, this process among
  // them), numbered 0.. in that order. Only those processes call it, each once per set of ranks.
  // Default: not supported (c10::NotImplementedError).
  virtual std::shared_ptr<Collectives> subgroup(const std::vector<int64_t>& ranks);
  // In words, for messages ("process group 'default' (gloo), rank 1 of 2").
  virtual std::string describe() const = 0;
};

// Over a c10d process group (gloo on CPU tensors, NCCL on CUDA tensors; torch.distributed's
// default group in a torchrun process). `subgroups`: the process groups of the ranks (of
// `group`) that train one particle together, one per group of data_parallel_groups of more than
// one process and fewer than all (c10d groups are created collectively, by every process, so
// they are made beforehand; swamp_ext's Python side does it with torch.distributed.new_group).
SWAMP_API std::shared_ptr<Collectives> process_group_collectives(
    c10::intrusive_ptr<c10d::ProcessGroup> group, std::chrono::milliseconds timeout,
    std::vector<std::pair<std::vector<int64_t>, c10::intrusive_ptr<c10d::ProcessGroup>>> subgroups =
        {});
// The process groups registered under these names (Python: `group.group_name`).
SWAMP_API std::shared_ptr<Collectives> process_group_collectives(
    const std::string& name, std::chrono::milliseconds timeout,
    const std::vector<std::pair<std::vector<int64_t>, std::string>>& subgroups = {});
// For C++ programs started by torchrun, without Python: the rendezvous from the environment
// torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), a c10d TCPStore (torchrun's own
// store when it hosts one) and c10d's store collectives over it. Meant for models of up to tens
// of MB per particle (every byte passes through the store, and with more processes than
// particles, every step's gradients); larger models use a process group. Subgroups are prefixes
// of the same store.
SWAMP_API std::shared_ptr<Collectives> store_collectives_from_env(
    std::chrono::milliseconds timeout);

// The processes of a distributed run (RunParts::processes).
class SWAMP_API DistributedProcesses : public Processes {
 public:
  // data_parallel: with fewer particles than processes, a particle is trained by a group of
  // processes (data_parallel_groups); false: by one process each, the others sit the round out
  // (Config::data_parallel "never", or "auto" where the rule finds the communication does not
  // pay: swamp_ext.distributed.data_parallel_choice).
  explicit DistributedProcesses(std::shared_ptr<Collectives> collectives,
                                bool data_parallel = true);
  // data_parallel_groups(size, n) seen from this process (or one process per particle)
  ProcessLayout layout(int64_t n) const override;
  void sum_in_group(int64_t n, std::vector<at::Tensor>& tensors) override;
  PendingSum start_sum_in_group(int64_t n, const at::Tensor& flat) override;
  void sum_over_all(std::vector<at::Tensor>& tensors) override;
  int64_t rank() const override { return c_->rank(); }
  std::vector<at::Tensor> gather(const std::vector<at::Tensor>& local, int64_t n) override;
  bool primary() const override { return c_->rank() == 0; }
  bool spread() const override { return c_->size() > 1; }
  void agree(const std::string& what,
             const std::vector<std::pair<std::string, std::string>>& fields) override;
  std::string describe() const override { return c_->describe(); }

 private:
  ProcessLayout layout_of(int64_t rank, int64_t n) const;
  // the collectives of the processes training this process's particle of a round of n (null:
  // it trains alone or sits the round out)
  Collectives* group_of(int64_t n);

  std::shared_ptr<Collectives> c_;
  bool data_parallel_ = true;
  // the collectives of each group of processes training one particle, by their ranks
  std::map<std::vector<int64_t>, std::shared_ptr<Collectives>> groups_;
};

// What the gradient all-reduces of data-parallel steps cost since the last reset, summed over
// the steps of this process: `in_flight_s` the time some bucket's sum was travelling (the union
// of the buckets' start-to-done intervals), `blocked_s` the time the training thread waited for
// them (after backward, or in a sum that cannot run in the background); the communication hidden
// behind backward is in_flight - blocked.
struct GradientSyncStats {
  int64_t steps = 0;
  int64_t buckets = 0;
  double bytes = 0.0;
  double in_flight_s = 0.0;
  double blocked_s = 0.0;
};
// The counts so far (reset: and start counting afresh).
SWAMP_API GradientSyncStats gradient_sync_stats(bool reset = false);

}  // namespace swamp
