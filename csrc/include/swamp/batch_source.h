// The data seam: where batches come from. The engine draws every particle's batch order itself
// (BatchOrder, hashed per seed, round and particle, saved in checkpoints) and asks a BatchSource
// for the samples of those indices, so the method keeps owning determinism whatever serves the
// data (the split torch makes between Sampler and Dataset). Before a particle's epoch the engine
// announces the batches it will ask for (expect), and before a pass in storage order (batch-norm
// statistics, evaluation) the pass (begin_scan), so that a source can fetch ahead. Every
// training batch carries its key (the particle's order stream, epoch, batch): a source with
// random transforms seeds them from it, so a run is reproducible whoever fetches the samples.
// Implementations: TensorBatchSource (tensors held on the training device); PyBatchSource in
// the bindings (any torch Dataset through a DataLoader, swamp_ext/pipeline.py).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "swamp/data.h"
#include "swamp/export.h"

namespace swamp {

struct Batch {
  at::Tensor x;  // model inputs on the training device: one tensor ...
  at::Tensor y;  // int64 labels on the training device
  // ... or several: a tuple / list / dict (string keys) of tensors, for models that take them
  // (Model::forward_inputs); x is then undefined.
  c10::IValue inputs;
};

// Which training batch is asked for: batch `batch` of epoch `epoch` of a particle whose batch
// order is the stream `stream` (hash_seed(seed, round, particle): unrelated across particles and
// rounds). `indices` are the samples (int64, on the device), `gen` the particle's generator.
//
// Data parallel inside a particle (several processes train it): `indices` are still the whole
// batch, and the source returns only the samples [shard_begin, shard_end) of it, but draws its
// random augmentation for the whole batch (the particle's generator advances as for the whole
// batch in every process, and the shard gets the draws the whole batch gives those samples).
// shard_end < 0: the whole batch.
struct TrainRequest {
  at::Tensor indices;
  at::Generator* gen = nullptr;
  uint64_t stream = 0;
  int64_t epoch = 0;
  int64_t batch = 0;
  int64_t shard_begin = 0;
  int64_t shard_end = -1;
  // The samples this process computes (indices.narrow over the shard).
  at::Tensor shard_indices() const {
    return shard_end < 0 ? indices : indices.narrow(0, shard_begin, shard_end - shard_begin);
  }
};

// The training batches a particle asks for next, in order: batches [first, end) of epoch `epoch`
// of `stream`, batch b being perm[b * batch_size, (b + 1) * batch_size), of which this process
// will ask for samples [shard_begin, shard_end) (shard_end < 0: all; see TrainRequest).
struct EpochPlan {
  uint64_t stream = 0;
  int64_t epoch = 0;
  int64_t first = 0;
  int64_t end = 0;
  at::Tensor perm;  // int64 on the CPU, the epoch's permutation of the training set
  int64_t batch_size = 0;
  int64_t shard_begin = 0;
  int64_t shard_end = -1;
};

// A pass in storage order: batches [0, B), [B, 2B), ... of the training inputs (batch-norm
// statistics) or the test set, covering samples [0, end).
enum class Split { kTrain, kTest };

class SWAMP_API BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t train_size() const = 0;
  virtual int64_t test_size() const = 0;
  virtual std::vector<int64_t> input_shape() const = 0;  // one sample's shape (empty: structured)
  virtual int64_t num_classes() const = 0;
  virtual c10::Device device() const = 0;
  // Training samples at r.indices, augmented with r.gen (the particle's generator; the source
  // draws from it only when it augments). A source may be asked from several threads at once
  // (particles side by side), in any order within a step.
  virtual Batch train_batch(const TrainRequest& r) = 0;
  // Announcements, so that a source can fetch ahead; requests that were not announced must be
  // served all the same. Default: nothing.
  virtual void expect(const EpochPlan& plan) { (void)plan; }
  virtual void begin_scan(Split split, int64_t batch_size, int64_t end) {
    (void)split;
    (void)batch_size;
    (void)end;
  }
  // A pass over the batches of `batch_size` from `begin` (a multiple of it) to `end`: this
  // process's share of a pass shared by several (evaluation, batch-norm statistics). Default:
  // begin_scan for a pass from 0, no announcement otherwise.
  virtual void begin_scan_range(Split split, int64_t batch_size, int64_t begin, int64_t end) {
    if (begin == 0) begin_scan(split, batch_size, end);
  }
  // Whether train_inputs / test_batch may be called from several threads at once (batch-norm
  // statistics and evaluation of particles side by side); false: one pass at a time.
  virtual bool concurrent_scans() const { return true; }
  // Training inputs [begin, begin + len) in storage order, never augmented (batch-norm
  // statistics); no labels.
  virtual Batch train_inputs(int64_t begin, int64_t len) = 0;
  // Test samples [begin, begin + len).
  virtual Batch test_batch(int64_t begin, int64_t len) = 0;
  // All test labels (int64 [test_size()], on the device).
  virtual at::Tensor test_labels() = 0;
  // Identifies the data (sizes, classes, normalisation, content): a checkpoint resumes only on
  // the same data.
  virtual std::string fingerprint() const = 0;
};

// A Dataset's tensors on the training device: uint8 images stay uint8 and become normalised
// floats batch by batch (InputPipeline), with random crop / flip where `augment` asks.
class SWAMP_API TensorBatchSource : public BatchSource {
 public:
  // Validates the data (validate_dataset) and moves it to `device`; augmentation needs image
  // inputs [N, C, H, W] (c10::ValueError otherwise).
  TensorBatchSource(const Dataset& data, const c10::Device& device, Augment augment = {});
  int64_t train_size() const override { return data_.x_train.size(0); }
  int64_t test_size() const override { return data_.x_test.size(0); }
  std::vector<int64_t> input_shape() const override { return data_.input_shape(); }
  int64_t num_classes() const override { return data_.num_classes; }
  c10::Device device() const override { return data_.x_train.device(); }
  Batch train_batch(const TrainRequest& r) override;
  Batch train_inputs(int64_t begin, int64_t len) override;
  Batch test_batch(int64_t begin, int64_t len) override;
  at::Tensor test_labels() override { return data_.y_test; }
  std::string fingerprint() const override;

 private:
  Dataset data_;
  std::unique_ptr<InputPipeline> inputs_;
};

}  // namespace swamp
