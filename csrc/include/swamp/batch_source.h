// The data seam: where batches come from. The engine draws every particle's batch order itself
// (BatchOrder, hashed per seed, round and particle, saved in checkpoints) and asks a BatchSource
// for the samples of those indices, so the method keeps owning determinism whatever serves the
// data (the split torch makes between Sampler and Dataset). Implementations: TensorBatchSource
// (tensors held on the training device); a Python Dataset plugs in here.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "swamp/data.h"
#include "swamp/export.h"

namespace swamp {

struct Batch {
  at::Tensor x;  // model inputs on the training device
  at::Tensor y;  // int64 labels on the training device
};

class SWAMP_API BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t train_size() const = 0;
  virtual int64_t test_size() const = 0;
  virtual std::vector<int64_t> input_shape() const = 0;  // one sample's shape
  virtual int64_t num_classes() const = 0;
  virtual c10::Device device() const = 0;
  // Training samples at `indices` (int64, on the device), augmented with `gen` (the particle's
  // generator; the source draws from it only when it augments).
  virtual Batch train_batch(const at::Tensor& indices, at::Generator* gen) = 0;
  // Training inputs [begin, begin + len) in storage order, never augmented (batch-norm
  // statistics).
  virtual at::Tensor train_inputs(int64_t begin, int64_t len) = 0;
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
  Batch train_batch(const at::Tensor& indices, at::Generator* gen) override;
  at::Tensor train_inputs(int64_t begin, int64_t len) override;
  Batch test_batch(int64_t begin, int64_t len) override;
  at::Tensor test_labels() override { return data_.y_test; }
  std::string fingerprint() const override;

 private:
  Dataset data_;
  std::unique_ptr<InputPipeline> inputs_;
};

}  // namespace swamp
