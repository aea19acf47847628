// TensorBatchSource: the batch seam over a Dataset's tensors on the training device.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <sstream>

#include "../common/exact_text.h"
#include "swamp/batch_source.h"

namespace swamp {

TensorBatchSource::TensorBatchSource(const Dataset& data, const c10::Device& device,
                                     Augment augment) {
  validate_dataset(data, 1);
  const bool augments = augment.crop_padding > 0 || augment.flip;
  TORCH_CHECK_VALUE(!augments || data.x_train.dim() == 4,
                    "Config.augment needs image inputs [N, C, H, W], got shape ",
                    data.x_train.sizes());
  data_ = dataset_to(data, device);
  inputs_ = std::make_unique<InputPipeline>(data_, augment);
}

Batch TensorBatchSource::train_batch(const TrainRequest& r) {
  Batch b;
  const at::Tensor idx = r.shard_indices();
  b.x = (*inputs_)(data_.x_train.index_select(0, idx), r.gen, r.indices.size(0), r.shard_begin);
  b.y = data_.y_train.index_select(0, idx);
  return b;
}

Batch TensorBatchSource::train_inputs(int64_t begin, int64_t len) {
  return Batch{(*inputs_)(data_.x_train.narrow(0, begin, len)), {}, {}};
}

Batch TensorBatchSource::test_batch(int64_t begin, int64_t len) {
  return Batch{
      (*inputs_)(data_.x_test.narrow(0, begin, len)), data_.y_test.narrow(0, begin, len), {}};
}

std::string TensorBatchSource::fingerprint() const {
  std::ostringstream o;
  o << data_.x_train.sizes() << data_.x_test.sizes() << " classes " << data_.num_classes;
  for (size_t c = 0; c < data_.mean.size(); ++c)
    o << " norm " << exact_text(data_.mean[c]) << "/" << exact_text(data_.std[c]);
  // Sums in float64, a few thousand samples at a time (no full-size copy of the data).
  for (const at::Tensor* t : {&data_.x_train, &data_.y_train, &data_.x_test, &data_.y_test}) {
    double sum = 0.0, abs_sum = 0.0, weighted = 0.0;
    for (int64_t s = 0; s < t->size(0); s += 4096) {
      const at::Tensor c = t->narrow(0, s, std::min<int64_t>(4096, t->size(0) - s)).to(at::kDouble);
      sum += c.sum().item<double>();
      abs_sum += c.abs().sum().item<double>();
      // per-sample sums weighted by position: a reordered dataset differs too
      const at::Tensor per_sample = c.dim() > 1 ? c.flatten(1).sum(1) : c;
      weighted += per_sample.dot(at::arange(s + 1, s + 1 + c.size(0), c.options())).item<double>();
    }
    o << " " << exact_text(sum) << " " << exact_text(abs_sum) << " " << exact_text(weighted);
  }
  return o.str();
}

}  // namespace swamp
