// ParticleState in a checkpoint (see trainer.h): saved and restored by the state itself.
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "trainer.h"

namespace swamp::engine {
namespace {
// Nonzero where the optimizer's mask `m` (the parameter's dtype, 1 kept) is 0.
bool nonzero_off_mask(const at::Tensor& t, const at::Tensor& m) {
  return m.defined() && t.ne(0).logical_and(m.eq(0)).any().item<bool>();
}
}  // namespace

void save_particle_state(TensorMap& out, const std::string& pre, const ParticleState& st) {
  out[pre + "step"] = scalar_i(st.step);
  out[pre + "group"] = scalar_i(st.size());
  const auto& bufs = st.opt.momentum_buffers();
  at::Tensor defined = at::zeros({static_cast<int64_t>(bufs.size())}, at::kByte);
  for (size_t i = 0; i < bufs.size(); ++i) {
    if (!bufs[i].defined()) continue;  // no gradient reached it yet
    out[pre + "momentum/" + std::to_string(i)] = bufs[i].detach();
    defined[static_cast<int64_t>(i)] = 1;
  }
  out[pre + "momentum_defined"] = defined;
  out[pre + "swa_count"] = scalar_i(st.swa.count());
  for (size_t i = 0; i < st.swa.value().size(); ++i)
    out[pre + "swa/" + std::to_string(i)] = st.swa.value()[i];
  for (size_t g = 0; g < st.orders.size(); ++g) {
    const std::string q = pre + std::to_string(g) + "/";
    const BatchOrder::State o = st.orders[g].state();
    out[q + "order/generator"] = o.generator;
    out[q + "order/current"] = scalar_i(o.current);
    if (o.perm.defined()) out[q + "order/perm"] = o.perm;
    out[q + "epoch_loss"] = scalar_d(st.epoch_loss[g]);
    out[q + "last_loss"] = scalar_d(st.last_loss[g]);
  }
  out[pre + "epoch_steps"] = scalar_i(st.epoch_steps);
  if (st.scaler) {  // fp16
    out[pre + "scaler/scale"] = scalar_d(st.scaler->scale());
    out[pre + "scaler/growth_tracker"] = scalar_i(st.scaler->growth_tracker());
    out[pre + "scaler/consecutive_skips"] = scalar_i(st.scaler->consecutive_skips());
    for (size_t g = 0; g < st.skipped.size(); ++g) {
      const std::string q = pre + std::to_string(g) + "/";
      out[q + "skipped"] = scalar_i(st.skipped[g]);
      out[q + "skipped_now"] = scalar_i(st.skipped_now[g]);
    }
  }
}

void restore_particle_state(Entries& e, const std::string& pre, const c10::Device& dev,
                            const Plan& plan, int64_t train_size, double momentum,
                            ParticleState& st) {
  const int64_t spe = plan.steps_per_epoch;
  st.step = e.integer(pre + "step", plan.rewind_step + 1, plan.total_steps);
  e.integer(pre + "group", st.size(), st.size());
  const auto& params = st.opt.params();
  const auto& masks = st.opt.masks();
  const auto n = static_cast<int64_t>(params.size());
  // which parameters have a momentum buffer: all that received a gradient, none without momentum
  const at::Tensor& defined = e.get(pre + "momentum_defined");
  if (defined.scalar_type() != at::kByte || defined.sizes() != at::IntArrayRef{n} ||
      defined.gt(1).any().item<bool>() || (momentum == 0.0 && defined.any().item<bool>()))
    e.damaged(pre + "momentum_defined",
              "must flag each of the " + std::to_string(n) + " parameters 0 or 1" +
                  (momentum == 0.0 ? " (0: training has no momentum)" : "") + ", is " +
                  describe(defined));
  std::vector<at::Tensor> bufs(params.size());
  for (int64_t i = 0; i < n; ++i) {
    const std::string key = pre + "momentum/" + std::to_string(i);
    if (defined[i].item<uint8_t>() == 0) continue;  // an entry anyway is refused as unexpected
    bufs[i] = e.like(key, params[i]).to(dev);
    if (nonzero_off_mask(bufs[i], masks[i]))
      e.damaged(key, "has momentum where the mask has pruned the weights");
  }
  st.opt.set_momentum_buffers(std::move(bufs));
  int64_t snapshots = 0;  // epoch ends in (rewind_step, step] from swa_start_epoch on
  if (plan.swa)
    for (int64_t end = spe; end <= st.step; end += spe)
      if (end > plan.rewind_step && end / spe - 1 >= plan.swa_start_epoch) ++snapshots;
  const int64_t sc = e.integer(pre + "swa_count", snapshots, snapshots);
  std::vector<at::Tensor> avg;
  for (int64_t i = 0; sc > 0 && i < n; ++i) {
    const std::string key = pre + "swa/" + std::to_string(i);
    avg.push_back(e.like(key, params[i]).to(dev));
    if (nonzero_off_mask(avg.back(), masks[i]))
      e.damaged(key, "has averaged weights where the mask has pruned them");
  }
  st.swa.restore(std::move(avg), sc);
  const int64_t epoch = (st.step - 1) / spe;  // of the last step taken
  for (size_t g = 0; g < st.orders.size(); ++g) {
    const std::string q = pre + std::to_string(g) + "/";
    BatchOrder::State o;
    o.generator = e.get(q + "order/generator");
    if (o.generator.scalar_type() != at::kByte || o.generator.dim() != 1)
      e.damaged(q + "order/generator",
                "must be a generator state (uint8 [n]), is " + describe(o.generator));
    o.current = e.integer(q + "order/current", epoch, epoch);
    const std::string pk = q + "order/perm";
    o.perm = e.get(pk);
    if (o.perm.scalar_type() != at::kLong || o.perm.sizes() != at::IntArrayRef{train_size})
      e.damaged(pk, "must be int64 [" + std::to_string(train_size) + "], is " + describe(o.perm));
    if (!at::equal(std::get<0>(o.perm.sort()), at::arange(train_size, o.perm.options())))
      e.damaged(pk, "is not a permutation of the training set");
    try {
      st.orders[g].restore(o);
    } catch (const c10::Error& err) {
      e.damaged(q + "order/generator", std::string("is not a valid generator state (") +
                                           err.what_without_backtrace() + ")");
    }
    st.epoch_loss[g] = e.real(q + "epoch_loss", -HUGE_VAL, HUGE_VAL);
    st.last_loss[g] = e.real(q + "last_loss", -HUGE_VAL, HUGE_VAL);
  }
  // steps taken in the current epoch (counted from the rewind step in the first one)
  const int64_t in_epoch = st.step - std::max(plan.rewind_step, (st.step / spe) * spe);
  st.epoch_steps = e.integer(pre + "epoch_steps", in_epoch, in_epoch);
  if (st.scaler) {  // fp16: the loss scale goes on where it was
    const double scale = e.real(pre + "scaler/scale", 0x1p-126, 0x1p126);
    const int64_t growth = e.integer(pre + "scaler/growth_tracker", 0, st.step);
    const int64_t consecutive = e.integer(pre + "scaler/consecutive_skips", 0, st.step);
    try {
      st.scaler->restore(scale, growth, consecutive);
    } catch (const c10::Error& err) {
      e.damaged(pre + "scaler/growth_tracker", err.what_without_backtrace());
    }
    for (size_t g = 0; g < st.skipped.size(); ++g) {
      const std::string q = pre + std::to_string(g) + "/";
      st.skipped[g] = e.integer(q + "skipped", 0, st.step);
      st.skipped_now[g] = static_cast<uint8_t>(e.integer(q + "skipped_now", 0, 1));
    }
  }
  for (int64_t i = 0; i < n; ++i)
    if (nonzero_off_mask(params[i], masks[i]))
      e.damaged(pre + "model", "has nonzero weights where the mask has pruned them");
}

}  // namespace swamp::engine
