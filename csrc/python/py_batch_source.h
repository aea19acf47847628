// Any torch Dataset behind the data seam (bindings only: the core library stays free of Python).
// The Python side (swamp_ext/pipeline.py, `_Feeder`) fetches the samples the engine asks for
// through a DataLoader whose batch sampler yields the engine's own orders (announced ahead by
// BatchSource::expect / begin_scan, so its workers fetch while the step runs), seeds random
// transforms from each batch's key, and checks what the dataset returns. Here the batches move to
// the training device and go through the same InputPipeline as in-memory data (uint8 scaling,
// normalisation, Config.augment from the particle's generator).
#pragma once

#include "bindings.h"
#include "swamp/batch_source.h"

namespace swamp::python {

class PyBatchSource : public BatchSource {
 public:
  // `feeder`: a swamp_ext.pipeline._Feeder. GIL held.
  PyBatchSource(py::object feeder, const c10::Device& device, Augment augment);
  ~PyBatchSource() override;

  int64_t train_size() const override { return train_size_; }
  int64_t test_size() const override { return test_size_; }
  std::vector<int64_t> input_shape() const override { return input_shape_; }
  int64_t num_classes() const override { return num_classes_; }
  c10::Device device() const override { return device_; }
  Batch train_batch(const TrainRequest& r) override;
  void expect(const EpochPlan& plan) override;
  void begin_scan(Split split, int64_t batch_size, int64_t end) override;
  void begin_scan_range(Split split, int64_t batch_size, int64_t begin, int64_t end) override;
  bool concurrent_scans() const override { return false; }
  Batch train_inputs(int64_t begin, int64_t len) override;
  Batch test_batch(int64_t begin, int64_t len) override;
  at::Tensor test_labels() override;
  std::string fingerprint() const override { return fingerprint_; }

 private:
  at::Tensor to_device(const at::Tensor& t) const;
  Batch pair_to_device(const py::object& pair, at::Generator* gen, int64_t batch = -1,
                       int64_t offset = 0) const;

  py::object feeder_;
  c10::Device device_;
  int64_t train_size_ = 0, test_size_ = 0, num_classes_ = 0;
  std::vector<int64_t> input_shape_;
  std::string fingerprint_;
  std::unique_ptr<InputPipeline> inputs_;
};

}  // namespace swamp::python
