// A checkpoint's entries: the container and its validation, and the one small interface through
// which every part of a run saves itself into a checkpoint (named tensors under a prefix, a
// TensorMap) and restores itself from one (Entries under the same prefix, every entry checked):
// models here (save_module / load_module), Masks::save / restore, ParticleState
// (save_particle_state / restore_particle_state, engine/trainer.h), round records
// (encode_round / decode_round, engine/round_text.h). Internal to swamp_core.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <set>
#include <string>

#include "swamp/checkpoint.h"

namespace swamp::engine {

// A checkpoint's entries, each checked before it is used: a missing entry, a wrong dtype or
// shape, a value out of its range or a non-finite one is one error naming the file and the
// entry (c10::Error), never a crash or a silent resume. Entries nobody asked for are refused too.
class Entries {
 public:
  Entries(std::string path, TensorMap m);
  [[noreturn]] void damaged(const std::string& key, const std::string& what) const;
  bool has(const std::string& key) const { return m_.count(key) != 0; }
  const at::Tensor& get(const std::string& key);
  int64_t integer(const std::string& key, int64_t lo, int64_t hi);  // an int64 scalar in [lo, hi]
  double real(const std::string& key, double lo, double hi);        // a finite float64 in [lo, hi]
  std::string text(const std::string& key);                         // uint8 [n]
  // The entry for a model tensor: same dtype and shape, finite values when floating.
  const at::Tensor& like(const std::string& key, const at::Tensor& model);
  void expect_all_used() const;

 private:
  std::string path_;
  TensorMap m_;
  std::set<std::string> used_;
};

// Scalars as entries.
at::Tensor scalar_i(int64_t v);
at::Tensor scalar_d(double v);
// "<dtype> <shape>", for messages.
std::string describe(const at::Tensor& t);

// A model's parameters and buffers as `prefix<name>` entries, and back (batch-norm variances
// and counters must be >= 0).
void save_module(TensorMap& out, const std::string& prefix, const torch::nn::Module& m);
void load_module(Entries& e, const std::string& prefix, torch::nn::Module& m);
// Whether `t` is nonzero somewhere `mask` is false; `t` is the mask's shape, or particles stacked
// along the first dimension ([G * d0, ...]).
bool nonzero_outside(const at::Tensor& t, const at::Tensor& mask);

}  // namespace swamp::engine
