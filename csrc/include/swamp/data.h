// Training data held as tensors on the training device, and per-particle batch orders.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "swamp/export.h"

namespace swamp {

struct Dataset {
  // Inputs are float [N, ...] used as they are, or uint8 images [N, C, H, W] (kept on the device
  // as uint8) that become floats in [0, 1] and are normalised per channel with mean / std.
  at::Tensor x_train;
  at::Tensor y_train;  // int64, [N], values in [0, num_classes)
  at::Tensor x_test;
  at::Tensor y_test;
  int64_t num_classes = 0;
  std::vector<double> mean;  // per channel, on the [0, 1] scale; empty: no normalisation
  std::vector<double> std;

  std::vector<int64_t> input_shape() const;  // x_train.shape[1:]
};

struct Augment {
  int64_t crop_padding = 0;  // random crop of the original size from the zero-padded image
  bool flip = false;         // random horizontal flip
};

// Turns stored samples into model inputs on their device: uint8 -> float / 255, then (with a
// generator) per-sample random crop and flip, then per-channel normalisation. No Python runs here.
class SWAMP_API InputPipeline {
 public:
  InputPipeline(const Dataset& data, Augment augment);
  // `x`: samples [offset, offset + x.size(0)) of a batch of `batch` (-1: x is the whole batch);
  // the random augmentation is drawn for the whole batch, x gets its samples' draws.
  at::Tensor operator()(const at::Tensor& x, at::Generator* gen = nullptr, int64_t batch = -1,
                        int64_t offset = 0) const;

 private:
  at::Tensor mean_, std_;
  Augment aug_;
};

// Checks shapes, dtypes, finiteness and label ranges; throws c10::ValueError / TypeError naming the
// offending field. `min_train` is the smallest acceptable training set (one batch).
SWAMP_API void validate_dataset(const Dataset& data, int64_t min_train);
// Same data on another device (a no-op when already there).
SWAMP_API Dataset dataset_to(const Dataset& data, const c10::Device& device);

// 64-bit mixing of (seed, round, particle, stream) into a generator seed: different particles and
// rounds get unrelated batch orders, not the same order shifted.
SWAMP_API uint64_t hash_seed(uint64_t seed, int64_t round, int64_t particle, uint64_t stream = 0);

// A stream of epoch permutations drawn from its own CPU generator.
class SWAMP_API BatchOrder {
 public:
  BatchOrder(int64_t n, uint64_t seed);
  // The permutation of epoch `epoch`; epochs must be asked for in increasing order.
  const at::Tensor& epoch(int64_t epoch);
  // The same generator also drives the particle's data augmentation.
  at::Generator& generator() { return gen_; }

  // Exact state, for checkpoints: generator state, current permutation and its epoch.
  struct State {
    at::Tensor generator;
    at::Tensor perm;
    int64_t current = -1;
  };
  State state() const;
  void restore(const State& s);

 private:
  int64_t n_;
  int64_t current_ = -1;
  at::Generator gen_;
  at::Tensor perm_;
};

}  // namespace swamp
