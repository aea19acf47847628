#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "../common/lanes.h"
#include "swamp/bench.h"
#include "swamp/engine.h"
#include "swamp/layers.h"
#include "swamp/models.h"
#include "swamp/optim.h"
#include "swamp/pruning.h"

namespace swamp {

double train_throughput(const std::string& name, const std::vector<int64_t>& input_shape,
                        int64_t num_classes, int64_t batch_size, int64_t steps,
                        const std::string& device) {
  TORCH_CHECK_VALUE(batch_size >= 1 && steps >= 1, "train_throughput: batch_size and steps >= 1");
  const c10::Device dev = resolve_device(device, "train_throughput");
  ModelPtr model = create_model(name, ModelSpec{input_shape, num_classes}, 0);
  model->to(dev);
  model->train(true);
  MaskedSGD opt(model->parameters(true), {}, SgdOptions{0.9, false, 5e-4});
  std::vector<int64_t> shape{batch_size};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  at::Tensor x = at::randn(shape, at::TensorOptions().device(dev));
  at::Tensor y =
      at::randint(0, num_classes, {batch_size}, at::TensorOptions().dtype(at::kLong).device(dev));
  auto step = [&] {
    opt.zero_grad();
    at::Tensor loss = at::cross_entropy_loss(model->forward(x), y);
    loss.backward();
    opt.step(0.01);
    return loss.item<double>();  // synchronises on CUDA
  };
  step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(batch_size * steps) / s;
}

double train_step_seconds(const StepBenchOptions& o) {
  TORCH_CHECK_VALUE(o.batch_size >= 1 && o.steps >= 1 && o.repeats >= 1 && o.particles >= 1,
                    "train_step_seconds: batch_size, steps, repeats and particles must be >= 1");
  TORCH_CHECK_VALUE(o.sparsity >= 0.0 && o.sparsity < 1.0,
                    "train_step_seconds: sparsity must be in [0, 1)");
  TORCH_CHECK_VALUE(
      o.sparse_kernels == "off" || o.sparse_kernels == "on" || o.sparse_kernels == "auto",
      "train_step_seconds: sparse_kernels must be off, on or auto");
  const c10::Device dev = resolve_device(o.device, "train_step_seconds");
  torch::manual_seed(0);
  // One-shot global magnitude masks of the single-particle model.
  ModelPtr single = create_model(o.model, ModelSpec{o.input_shape, o.num_classes}, 0);
  std::map<std::string, at::Tensor> masks;
  {
    auto named = single->named_parameters(true);
    std::vector<at::Tensor> w, m;
    for (const auto& n : prunable_parameter_names(*single)) {
      masks[n] = at::ones_like(named[n], at::kBool);
      w.push_back(named[n].detach());
      m.push_back(masks[n]);
    }
    TORCH_CHECK_VALUE(o.prune == "global" || o.prune == "layerwise",
                      "train_step_seconds: prune must be global or layerwise, got '", o.prune, "'");
    if (o.sparsity > 0.0 && o.prune == "global") global_magnitude_prune_(w, m, o.sparsity);
    if (o.sparsity > 0.0 && o.prune == "layerwise")
      for (size_t i = 0; i < w.size(); ++i) {  // the largest (1 - sparsity) of each tensor kept
        const at::Tensor a = w[i].abs().flatten();
        const auto keep = static_cast<int64_t>(std::llround((1.0 - o.sparsity) * a.numel()));
        at::Tensor flat = at::zeros_like(a, at::kBool);
        if (keep > 0) flat.index_fill_(0, std::get<1>(a.topk(keep)), true);
        m[i].copy_(flat.view_as(m[i]));
      }
  }
  // threads: the copies side by side, one thread each; with stacked, each lane's particles in one
  // stacked model (the threads path for linear-only models, see lane_stack).
  const int64_t lanes = o.threads ? particle_lanes(o.particles) : 1;
  TORCH_CHECK_VALUE(!(o.threads && o.stacked) || o.particles % lanes == 0,
                    "train_step_seconds: stacked lanes need the particles (", o.particles,
                    ") to divide evenly over the ", lanes, " lanes");
  const int64_t P = o.stacked ? o.particles / lanes : 1;
  const int64_t copies = o.particles / P;
  struct Unit {
    ModelPtr model;
    std::unique_ptr<MaskedSGD> opt;
    at::Tensor x, y;
  };
  std::vector<Unit> units;
  for (int64_t c = 0; c < copies; ++c) {
    Unit u;
    u.model = create_model(o.model, ModelSpec{o.input_shape, o.num_classes, P}, 0);
    u.model->to(dev);
    u.model->train(true);
    if (dev.is_cpu())
      layers::enable_sparse(*u.model, masks, o.sparse_kernels, o.sparse_density,
                            o.sparse_conv_density);
    u.opt = std::make_unique<MaskedSGD>(layers::trainable_tensors(*u.model),
                                        layers::trainable_masks(*u.model, masks, P),
                                        SgdOptions{0.9, false, 5e-4});
    std::vector<int64_t> shape{P, o.batch_size};
    shape.insert(shape.end(), o.input_shape.begin(), o.input_shape.end());
    u.x = layers::stack_inputs(at::randn(shape, at::TensorOptions().device(dev)));
    if (P == 1) u.x = u.x.contiguous();
    u.y = at::randint(0, o.num_classes, {P * o.batch_size},
                      at::TensorOptions().dtype(at::kLong).device(dev));
    units.push_back(std::move(u));
  }
  std::vector<double> losses(units.size());
  auto step = [&] {
    run_lanes(lanes, [&](int64_t lane) {
      for (size_t c = static_cast<size_t>(lane); c < units.size(); c += lanes) {
        Unit& u = units[c];
        u.opt->zero_grad();
        const at::Tensor logits = layers::split_outputs(u.model->forward(u.x), P);
        at::Tensor loss = at::cross_entropy_loss(logits.reshape({P * o.batch_size, -1}), u.y) *
                          static_cast<double>(P);
        loss.backward();
        u.opt->step(0.01);
        losses[c] = loss.item<double>();  // synchronises on CUDA
      }
    });
    double total = 0.0;
    for (double l : losses) total += l;
    return total;
  };
  step();
  std::vector<double> times;
  for (int64_t r = 0; r < o.repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.steps; ++i) step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                    static_cast<double>(o.steps));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace swamp
