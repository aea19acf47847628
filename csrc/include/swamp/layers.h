// The layers every built-in model is made of, able to hold N particles in one module ("stacked"):
// one forward/backward trains N independent copies of the network, each on its own batch.
//
// Layout. A stacked activation is [B, N*C, ...]: sample b of every particle's batch sits in row b,
// particle n's channels (or features) at [n*C, (n+1)*C). Every parameter and buffer is
// particle-major, [N*out, ...], so that `t.view({N, -1, ...})[n]` is particle n's tensor and has
// the single-particle shape. With N = 1 the layers are exactly torch's Linear / Conv2d /
// BatchNorm2d (same parameter names, shapes, initialisation and kernels).
//   Linear      weight [N*out, in], bias [N*out]: batched matmul over the particles. Besides the
//               stacked [B, N*in] input it takes a particle-major [N, B, in] one and then
//               returns [N, B, out]: a stack of linear layers runs without layout copies
//               between them (to_particle_major / from_particle_major around the stack).
//   conv2d()    a Conv2d with N*in -> N*out channels and groups = N (one group per particle)
//   batchnorm() a BatchNorm2d over N*C channels: per-channel statistics are per particle
//
// Sparse mode (Linear, Conv2d): with a pruning mask set, the layer trains only the unpruned
// weights: `values` (the nonzeros, row-major order, [N*nnz]) is the trainable tensor, the forward
// pass and the input gradient are sparse x dense products (Conv2d: direct sparse convolution,
// plane by plane, no im2col) and the weight gradient is computed at the nonzeros only.
// sync_dense() writes the values back into `weight`.
#pragma once

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "swamp/export.h"

namespace swamp::layers {

struct SparseStructure;  // CSR + CSC index of a mask (layers.cpp)

// What a layer with sparse mode shares: its weight's unpruned entries as trainable values.
class SWAMP_API SparseWeightLayer {
 public:
  virtual ~SparseWeightLayer() = default;
  // Sparse mode: `mask` is the single-particle bool mask of the weight, shared by all particles.
  // Takes the current weights at the mask's nonzeros as the trainable values.
  virtual void set_sparse(const at::Tensor& mask) = 0;
  // Whether the layer can train sparse at all (Conv2d: one group per particle, on the CPU).
  virtual bool sparse_capable() const { return true; }
  // Writes the values back into the weight (zeros elsewhere) and leaves sparse mode.
  void clear_sparse();
  bool is_sparse() const { return sparse_ != nullptr; }
  // The trainable values (sparse mode only), [N * nnz].
  at::Tensor& values() { return values_; }
  // Writes the values into the weight (zeros at pruned positions); stays in sparse mode.
  void sync_dense();
  // Loads the weight (at the mask's nonzeros) into the values.
  void load_from_dense();
  // A values-shaped tensor ([N * nnz], e.g. the values' gradient) as a dense weight-shaped one,
  // zeros at the pruned positions (sparse mode only).
  at::Tensor dense_from_values(const at::Tensor& values) const;

 protected:
  // The same, differentiable: the gradient of the weight-shaped result flows back to `values`
  // at the nonzeros only.
  at::Tensor scattered(const at::Tensor& values) const;
  // The dense weight parameter: N particles of [rows, cols] (a conv weight seen as
  // [out, in * kh * kw]).
  virtual at::Tensor& dense_weight() = 0;
  // Enters sparse mode for a [rows, cols] mask (checked by the layer).
  void enter_sparse(const at::Tensor& mask2d, int64_t particles);

  std::shared_ptr<SparseStructure> sparse_;
  at::Tensor values_;

 private:
  int64_t sparse_particles_ = 1;
  std::vector<int64_t> weight_shape_;
};

class SWAMP_API LinearImpl : public torch::nn::LinearImpl, public SparseWeightLayer {
 public:
  LinearImpl(int64_t in, int64_t out, int64_t particles = 1, bool bias = true);
  at::Tensor forward(const at::Tensor& x);

  int64_t particles() const { return particles_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  // `mask`: [out, in].
  void set_sparse(const at::Tensor& mask) override;

 protected:
  at::Tensor& dense_weight() override { return weight; }

 private:
  int64_t in_, out_, particles_;
};
TORCH_MODULE(Linear);

// torch's Conv2d (same parameters, initialisation and dense kernels) with sparse mode: a pruned
// convolution trains on direct sparse kernels, CPU only. A stacked layer holds `particles`
// convolutions as groups (options.groups() == particles for sparse mode; conv2d() below).
class SWAMP_API Conv2dImpl : public torch::nn::Conv2dImpl, public SparseWeightLayer {
 public:
  explicit Conv2dImpl(const torch::nn::Conv2dOptions& options, int64_t particles = 1);
  at::Tensor forward(const at::Tensor& x);
  // `mask`: one particle's [out, in, kh, kw] (out = the weight's rows / particles).
  void set_sparse(const at::Tensor& mask) override;
  bool sparse_capable() const override;
  int64_t particles() const { return particles_; }

 protected:
  at::Tensor& dense_weight() override { return weight; }

 private:
  int64_t particles_;
};
TORCH_MODULE(Conv2d);

// ---- channels-last compute ----------------------------------------------------------------
// Channels-last (NHWC) compute for a scope (Config::channels_last), in the calling thread: every
// dense Conv2d forward runs on channels-last copies of its input and weight, so its output (and
// the activations after it) are NHWC. The parameters themselves stay in the contiguous layout:
// masks, pruning, optimizer state, averages, checkpoints and exports see one memory order, the
// logical one; the copies are part of the autograd graph (the weight gradient comes back NCHW).
// The sparse kernels compute NCHW whatever the scope says. Like autocast it is thread-local:
// each lane of the threads path holds its own guard.
SWAMP_API bool channels_last_enabled();
class SWAMP_API ChannelsLastGuard {
 public:
  explicit ChannelsLastGuard(bool on);
  ~ChannelsLastGuard();
  ChannelsLastGuard(const ChannelsLastGuard&) = delete;
  ChannelsLastGuard& operator=(const ChannelsLastGuard&) = delete;

 private:
  bool previous_;
};
// `t` in channels-last memory order where the scope is on and `t` is 4-D, else `t` itself.
SWAMP_API at::Tensor channels_last_if_enabled(const at::Tensor& t);

// ---- sparse mode over a whole model ----------------------------------------------------------
// Single-particle masks by parameter name ("<module>.weight"), as the pruning code keeps them.
using MaskMap = std::map<std::string, at::Tensor>;
// Puts every Linear and Conv2d layer of `model` with a mask into sparse mode according to `mode`:
// "on" every pruned layer (density < 1), "auto" linear layers with density <= `max_density` and
// convolutions with density <= `max_conv_density`, "off" none. Returns how many layers went
// sparse. The sparse kernels are CPU only: the caller keeps them off elsewhere.
SWAMP_API int64_t enable_sparse(torch::nn::Module& model, const MaskMap& masks,
                                const std::string& mode, double max_density,
                                double max_conv_density);
// Leaves sparse mode in every layer (the values written back into the weights).
SWAMP_API void disable_sparse(torch::nn::Module& model);
// Writes the values of every sparse layer into its weight, staying sparse.
SWAMP_API void sync_sparse(torch::nn::Module& model);
// Sparse mode for the length of a scope, as enable_sparse picks it (e.g. the passes over the data
// after training: batch-norm statistics, evaluation); on leaving, every layer is dense again with
// its weights as they were. Does nothing for `mode` "off".
class SWAMP_API SparseScope {
 public:
  SparseScope(torch::nn::Module& model, const MaskMap& masks, const std::string& mode,
              double max_density, double max_conv_density);
  ~SparseScope();
  SparseScope(const SparseScope&) = delete;
  SparseScope& operator=(const SparseScope&) = delete;

 private:
  torch::nn::Module& model_;
};
// The tensors an optimizer, SWA and averaging work on, one per parameter of `model` in order:
// the parameter itself, or the values of a Linear layer in sparse mode.
SWAMP_API std::vector<at::Tensor> trainable_tensors(torch::nn::Module& model);
// The masks of trainable_tensors(model) for a `particles`-particle model: each parameter's mask
// repeated per particle; undefined for unmasked parameters and sparse values.
SWAMP_API std::vector<at::Tensor> trainable_masks(torch::nn::Module& model, const MaskMap& masks,
                                                  int64_t particles);

// Conv2d with `particles` groups (no bias unless asked), see above.
SWAMP_API Conv2d conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                        int64_t particles = 1, bool bias = false);
// torch's BatchNorm2d (same options, parameters, buffers and eval-mode kernel) whose training
// statistics are those of the whole data-parallel batch while a SyncBatchNormScope is alive on
// the calling thread (Config::sync_batchnorm); torch's own forward otherwise.
class SWAMP_API BatchNorm2dImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;
  at::Tensor forward(const at::Tensor& input);
};
TORCH_MODULE(BatchNorm2d);

// BatchNorm2d over `particles` x `channels` channels (the stacked layout).
SWAMP_API BatchNorm2d batchnorm(int64_t channels, int64_t particles = 1);

// Synchronised batch norm. While a scope is alive on this thread, batch norm in training mode
// (the zoo's BatchNorm2d, and a Python module's nn.BatchNorm layers through swamp_ext) reduces its
// statistics over the processes that train the particle together: `sum` adds tensors in place
// over them (every member calls it with the same shapes, in the same order). The backward pass
// reduces the statistics' gradients the same way, so every member's gradient is that of the
// whole batch's loss, as torch.nn.SyncBatchNorm.
using GroupSum = std::function<void(std::vector<at::Tensor>&)>;
class SWAMP_API SyncBatchNormScope {
 public:
  explicit SyncBatchNormScope(GroupSum sum);
  ~SyncBatchNormScope();
  SyncBatchNormScope(const SyncBatchNormScope&) = delete;
  SyncBatchNormScope& operator=(const SyncBatchNormScope&) = delete;

 private:
  int64_t id_;
  const SyncBatchNormScope* outer_;
};
// Whether a SyncBatchNormScope is alive on this thread.
SWAMP_API bool sync_batchnorm_active();
// Training-mode batch norm over the channels (dim 1) of `input` ([N, C, ...]) with the
// statistics of the whole group's batch (the active scope's), updating `running_mean`,
// `running_var` (unbiased variance) and `num_batches_tracked` as torch does: momentum `momentum`,
// or the cumulative average when `momentum` < 0. `weight` / `bias` may be undefined.
SWAMP_API at::Tensor sync_batch_norm(const at::Tensor& input, const at::Tensor& weight,
                                     const at::Tensor& bias, at::Tensor running_mean,
                                     at::Tensor running_var, at::Tensor num_batches_tracked,
                                     double momentum, double eps);

// Stacked layout helpers. Per-particle inputs [N, B, ...] -> the stacked [B, N*C, ...] layout.
SWAMP_API at::Tensor stack_inputs(const at::Tensor& per_particle);
// The same input for every particle: [B, C, ...] -> [B, N*C, ...].
SWAMP_API at::Tensor repeat_input(const at::Tensor& x, int64_t particles);
// [B, N*C, ...] -> [N, B, C*...] (contiguous) for a stack of Linear layers; N = 1: flatten(1).
SWAMP_API at::Tensor to_particle_major(const at::Tensor& x, int64_t particles);
// [N, B, F] -> the stacked [B, N*F]; a 2-d tensor is returned unchanged.
SWAMP_API at::Tensor from_particle_major(const at::Tensor& y);
// Stacked logits [B, N*K] -> [N, B, K].
SWAMP_API at::Tensor split_outputs(const at::Tensor& y, int64_t particles);
// Particle n's slice of a particle-major tensor (scalars, e.g. num_batches_tracked, are shared).
SWAMP_API at::Tensor particle_slice(const at::Tensor& stacked, int64_t particles, int64_t n);

}  // namespace swamp::layers
