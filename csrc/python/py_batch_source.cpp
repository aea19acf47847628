#include "py_batch_source.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include "structured.h"

namespace swamp::python {

PyBatchSource::PyBatchSource(py::object feeder, const c10::Device& device, Augment augment)
    : feeder_(std::move(feeder)), device_(device) {
  train_size_ = feeder_.attr("train_size").cast<int64_t>();
  test_size_ = feeder_.attr("test_size").cast<int64_t>();
  num_classes_ = feeder_.attr("num_classes").cast<int64_t>();
  input_shape_ = feeder_.attr("input_shape").cast<std::vector<int64_t>>();
  fingerprint_ = feeder_.attr("fingerprint").cast<std::string>();
  Dataset norm;  // only what the pipeline reads: the normalisation and its device
  norm.x_train = at::empty({0}, at::TensorOptions().device(device));
  norm.mean = feeder_.attr("mean").cast<std::vector<double>>();
  norm.std = feeder_.attr("std").cast<std::vector<double>>();
  TORCH_CHECK_VALUE(norm.mean.size() == norm.std.size(), "data: mean and std differ in length");
  const bool augments = augment.crop_padding > 0 || augment.flip;
  TORCH_CHECK_VALUE(!augments || input_shape_.size() == 3,
                    "Config.augment needs image inputs [C, H, W] per sample, got shape ",
                    at::IntArrayRef(input_shape_));
  TORCH_CHECK_VALUE(
      norm.mean.empty() ||
          (!input_shape_.empty() && input_shape_[0] == static_cast<int64_t>(norm.mean.size())),
      "data: ", norm.mean.size(), " normalisation channels for inputs of shape ",
      at::IntArrayRef(input_shape_));
  inputs_ = std::make_unique<InputPipeline>(norm, augment);
}

PyBatchSource::~PyBatchSource() {
  py::gil_scoped_acquire gil;
  feeder_ = py::object();
}

at::Tensor PyBatchSource::to_device(const at::Tensor& t) const {
  if (t.device() == device_) return t;
  return t.to(device_, /*non_blocking=*/t.is_pinned());
}

// (x, y) from Python (GIL held by the caller) into a Batch on the device, through the pipeline.
Batch PyBatchSource::pair_to_device(const py::object& pair, at::Generator* gen, int64_t batch,
                                    int64_t offset) const {
  auto t = pair.cast<py::tuple>();
  TORCH_CHECK(t.size() == 2, "data: the feeder returned ", t.size(), " items, expected (x, y)");
  at::Tensor y = t[1].is_none() ? at::Tensor() : t[1].cast<at::Tensor>();
  if (!THPVariable_Check(t[0].ptr())) {  // structured inputs: moved as they are
    return Batch{at::Tensor(), y.defined() ? to_device(y) : y,
                 structured_inputs(t[0], [this](const at::Tensor& v) { return to_device(v); })};
  }
  at::Tensor x = t[0].cast<at::Tensor>();
  py::gil_scoped_release nogil;
  return Batch{(*inputs_)(to_device(x), gen, batch, offset), y.defined() ? to_device(y) : y, {}};
}

// A shard (data parallel): the feeder fetches the shard's samples only, their random transforms
// seeded by their place in the whole batch; Config.augment draws for the whole batch.
Batch PyBatchSource::train_batch(const TrainRequest& r) {
  py::gil_scoped_acquire gil;
  py::object pair =
      feeder_.attr("train_batch")(r.stream, r.epoch, r.batch, r.shard_indices(), r.shard_begin);
  return pair_to_device(pair, r.gen, r.indices.size(0), r.shard_begin);
}

void PyBatchSource::expect(const EpochPlan& plan) {
  py::gil_scoped_acquire gil;
  feeder_.attr("expect")(plan.stream, plan.epoch, plan.first, plan.end, plan.perm, plan.batch_size,
                         plan.shard_begin, plan.shard_end);
}

void PyBatchSource::begin_scan(Split split, int64_t batch_size, int64_t end) {
  begin_scan_range(split, batch_size, 0, end);
}

void PyBatchSource::begin_scan_range(Split split, int64_t batch_size, int64_t begin, int64_t end) {
  py::gil_scoped_acquire gil;
  feeder_.attr("begin_scan")(split == Split::kTrain ? "train" : "test", batch_size, end, begin);
}

Batch PyBatchSource::train_inputs(int64_t begin, int64_t len) {
  py::gil_scoped_acquire gil;
  return pair_to_device(feeder_.attr("train_inputs")(begin, len), nullptr);
}

Batch PyBatchSource::test_batch(int64_t begin, int64_t len) {
  py::gil_scoped_acquire gil;
  return pair_to_device(feeder_.attr("test_batch")(begin, len), nullptr);
}

at::Tensor PyBatchSource::test_labels() {
  at::Tensor y;
  {
    py::gil_scoped_acquire gil;
    y = feeder_.attr("test_labels")().cast<at::Tensor>();
  }
  return to_device(y);
}

}  // namespace swamp::python
