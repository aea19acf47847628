#include "trainer.h"

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <optional>
#include <tuple>

#include "../common/autocast.h"
#include "../common/lanes.h"
#include "swamp/layers.h"

namespace swamp::engine {

namespace {
// hash_seed stream of the training forwards' random draws (dropout ...)
constexpr uint64_t kForwardStream = 0xd7095;
// Gradient buckets of a data-parallel step, DDP's sizes: the first (the last layers' gradients,
// ready first) small so that sending starts early in backward, the others larger.
constexpr int64_t kFirstBucketBytes = int64_t{1} << 20;
constexpr int64_t kBucketBytes = int64_t{25} << 20;
}  // namespace

std::vector<at::Tensor> trainable(const Group& grp) {
  std::vector<at::Tensor> all;
  for (Model* m : grp.models)
    for (auto& t : layers::trainable_tensors(*m)) all.push_back(t);
  return all;
}

void load_trainable(Model& model, const std::vector<at::Tensor>& values, size_t offset) {
  torch::NoGradGuard no_grad;
  auto params = layers::trainable_tensors(model);
  for (size_t i = 0; i < params.size(); ++i) params[i].copy_(values.at(offset + i));
}

Trainer::Trainer(const Config& cfg, const Plan& plan, BatchSource& data, const Hooks& hooks)
    : cfg_(cfg), plan_(plan), data_(data), hooks_(hooks), device_(data.device()) {}

ParticleState Trainer::start(Group& grp, const std::map<std::string, at::Tensor>& masks,
                             int64_t round, int64_t first, int64_t step) {
  const int64_t group = grp.particles();
  std::vector<at::Tensor> opt_masks;
  grp.first.clear();
  for (Model* m : grp.models) {
    grp.first.push_back(opt_masks.size());
    for (auto& t : layers::trainable_masks(*m, masks, grp.per_model)) opt_masks.push_back(t);
  }
  grp.first.push_back(opt_masks.size());
  ParticleState st{step,
                   MaskedSGD(trainable(grp), std::move(opt_masks),
                             SgdOptions{cfg_.momentum, cfg_.nesterov, cfg_.weight_decay}),
                   {},
                   {},
                   RunningAverage(),
                   std::vector<double>(static_cast<size_t>(group), 0.0),
                   0,
                   std::vector<double>(static_cast<size_t>(group), 0.0),
                   std::nullopt,
                   {},
                   {}};
  if (cfg_.precision == "fp16") {
    st.scaler.emplace();
    st.skipped.assign(static_cast<size_t>(group), 0);
    st.skipped_now.assign(static_cast<size_t>(group), 0);
  }
  for (int64_t g = 0; g < group; ++g) {
    st.streams.push_back(hash_seed(cfg_.seed, round, first + g));
    st.orders.emplace_back(data_.train_size(), st.streams.back());
  }
  return st;
}

// The loss of batch b of the G particles [g0, g0 + G) of the group, held by `model`: one value
// per particle (their sum is what is minimised: the particles do not interact, so each gets
// exactly its own gradient).
at::Tensor Trainer::batch_loss(Model& model, ParticleState& st, int64_t g0, int64_t G,
                               int64_t epoch, int64_t b, const std::vector<at::Tensor>& perms) {
  const int64_t B = cfg_.batch_size;
  auto request = [&](int64_t g) {
    return TrainRequest{perms[g].narrow(0, b * B, B), &st.orders[g].generator(), st.streams[g],
                        epoch, b};
  };
  if (G == 1) {
    TrainRequest r = request(g0);
    if (dp_.on()) std::tie(r.shard_begin, r.shard_end) = dp_.layout.shard(B);  // its share
    const Batch batch = data_.train_batch(r);
    const at::Tensor loss =
        batch.x.defined()
            ? model.training_loss(layers::channels_last_if_enabled(batch.x), batch.y, 1)
            : model.training_loss_inputs(batch.inputs, batch.y);
    // the shard's mean loss, weighted by its part of the batch: the group's sum is the batch's mean
    return dp_.on()
               ? loss * (static_cast<double>(r.shard_end - r.shard_begin) / static_cast<double>(B))
               : loss;
  }
  std::vector<at::Tensor> xs, ys;
  for (int64_t g = g0; g < g0 + G; ++g) {
    Batch batch = data_.train_batch(request(g));
    TORCH_CHECK_VALUE(batch.x.defined(),
                      "particles stacked in one model take one input tensor; "
                      "the data gives structured inputs: use particle_mode 'sequential' or "
                      "'threads'");
    xs.push_back(std::move(batch.x));
    ys.push_back(std::move(batch.y));
  }
  return model.training_loss(layers::channels_last_if_enabled(layers::stack_inputs(at::stack(xs))),
                             at::cat(ys), G);
}

// One SGD step of every particle of the group on batch b; returns the losses (one per
// particle). On the threads path every lane steps its models with its own thread; a single
// model is one lane, run by the calling thread with the whole intra-op pool.
at::Tensor Trainer::step_group(const Group& grp, ParticleState& st, int64_t epoch, int64_t b,
                               const std::vector<at::Tensor>& perms, double lr) {
  const auto K = static_cast<int64_t>(grp.models.size());
  std::vector<at::Tensor> losses(static_cast<size_t>(K));
  const std::optional<at::ScalarType> amp = autocast_dtype(cfg_.precision);
  const double scale = st.scaler ? st.scaler->scale() : 1.0;
  std::vector<uint8_t> overflow(static_cast<size_t>(K), 0);
  run_lanes(grp.lanes, [&](int64_t lane) {
    for (int64_t k = lane; k < K; k += grp.lanes) {
      const size_t t0 = grp.first[k], t1 = grp.first[k + 1];
      st.opt.zero_grad(t0, t1);
      // batch-norm statistics of the group's whole batch, forward and backward
      std::optional<layers::SyncBatchNormScope> sync_bn;
      if (dp_.on() && cfg_.sync_batchnorm) sync_bn.emplace(dp_.sum);
      at::Tensor loss;
      if (draws_random_) {  // this particle's stream at this step (not the threads path), and
        // in a data-parallel group this process's own draws for its shard
        at::Generator gen = at::globalContext().defaultGenerator(device_);
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_current_seed(hash_seed(st.streams[k * grp.per_model], st.step,
                                       dp_.layout.group_rank, kForwardStream));
      }
      {  // the forward pass and the loss under autocast (this thread's); backward outside it
        const AutocastGuard autocast(device_.type(), amp);
        const layers::ChannelsLastGuard channels_last(channels_last_);
        loss = batch_loss(*grp.models[k], st, k * grp.per_model, grp.per_model, epoch, b, perms);
      }
      if (dp_.on()) {
        // the group's gradients and loss summed before the step (the same in every member, so
        // an fp16 overflow skips the step everywhere); the gradients travel in buckets while
        // backward goes on
        at::Tensor loss_sum = loss.detach().to(at::kFloat).reshape({-1}).clone();
        PendingSum loss_pending = dp_.start(loss_sum);
        buckets_->prepare();
        (st.scaler ? loss.sum() * scale : loss.sum()).backward();
        buckets_->finish();
        loss_pending.wait();
        std::vector<at::Tensor> grads;
        for (size_t i = t0; i < t1; ++i) grads.push_back(st.opt.params()[i].grad());
        loss = loss_sum;
        if (st.scaler) {
          overflow[k] = st.scaler->unscale(grads) ? 0 : 1;
          if (!overflow[k]) st.opt.step(lr, t0, t1);
        } else {
          st.opt.step(lr, t0, t1);
        }
      } else if (st.scaler) {
        (loss.sum() * scale).backward();
        std::vector<at::Tensor> grads;
        for (size_t i = t0; i < t1; ++i) grads.push_back(st.opt.params()[i].grad());
        // an overflow skips the step: weights, momentum (and so SWA and masks) stay as they were
        overflow[k] = st.scaler->unscale(grads) ? 0 : 1;
        if (!overflow[k]) st.opt.step(lr, t0, t1);
      } else {
        loss.sum().backward();
        st.opt.step(lr, t0, t1);
      }
      losses[k] = loss.detach().to(at::kFloat);
    }
  });
  if (st.scaler) {
    bool any = false;
    for (int64_t k = 0; k < K; ++k) {
      any = any || overflow[k] != 0;
      for (int64_t g = k * grp.per_model; g < (k + 1) * grp.per_model; ++g) {
        st.skipped_now[g] = overflow[k];
        st.skipped[g] += overflow[k];
      }
    }
    st.scaler->update(any);
  }
  return K == 1 ? losses[0] : at::cat(losses);
}

namespace {
// fp16: this many skipped steps in a row (the scale halved each time) is divergence
constexpr int64_t kMaxSkipsInARow = 40;

void check_finite(double loss, int64_t round, int64_t particle, int64_t step) {
  TORCH_CHECK(std::isfinite(loss), "training diverged: the loss is ", loss, " in round ", round,
              round < 0 ? " (ticket)" : "", ", particle ", particle, ", step ", step,
              "; lower the learning rate");
}
}  // namespace

void Trainer::train(const Group& grp, ParticleState& st, int64_t round, int64_t first, int64_t end,
                    bool swa, const SavePoints& save, const DataParallel& dp) {
  const int64_t procs = dp.layout.per_particle;
  TORCH_CHECK(!dp.on() || (grp.particles() == 1 && dp.sum && dp.start),
              "data parallel: a group of ", procs, " processes trains one particle, got ",
              grp.particles());
  TORCH_CHECK_VALUE(procs <= cfg_.batch_size, "data parallel: a batch of ", cfg_.batch_size,
                    " samples cannot be split over the ", procs,
                    " processes that train one particle (each needs at least one); raise "
                    "Config.batch_size or start fewer processes");
  dp_ = dp;
  struct Reset {
    DataParallel& dp;
    std::unique_ptr<GradientBuckets>& buckets;
    ~Reset() {
      buckets.reset();
      dp = DataParallel{};
    }
  } reset{dp_, buckets_};
  if (dp_.on()) {
    std::vector<at::Tensor> params(st.opt.params().begin() + static_cast<int64_t>(grp.first[0]),
                                   st.opt.params().begin() + static_cast<int64_t>(grp.first[1]));
    buckets_ = std::make_unique<GradientBuckets>(std::move(params), dp_.start, kFirstBucketBytes,
                                                 kBucketBytes);
  }
  for (Model* m : grp.models) m->train(true);
  const int64_t spe = plan_.steps_per_epoch;
  const int64_t particles = particles_in_round(cfg_, std::max<int64_t>(round, 0));
  const int64_t G = st.size();
  int64_t epochs_since_save = 0;
  int64_t steps_since_save = 0;
  // The CPU reads the loss every step; a GPU reads it in groups and at epoch ends, so that the
  // host does not wait for the device on every step. Divergence names the exact step either way.
  const size_t sync_every = hooks_.loss_sync_every > 0 ? static_cast<size_t>(hooks_.loss_sync_every)
                                                       : (device_.is_cpu() ? 1 : 32);
  // fp16 reads every step anyway (whether the gradients overflowed decides the step)
  const size_t sync = st.scaler ? 1 : sync_every;
  std::vector<std::pair<int64_t, at::Tensor>> pending;
  auto add_losses = [&](const double* v, int64_t step) {
    for (int64_t g = 0; g < G; ++g) {
      double x = v[g];
      if (st.scaler && st.skipped_now[g]) {
        TORCH_CHECK(st.scaler->consecutive_skips() < kMaxSkipsInARow,
                    "training diverged: fp16 gradients overflowed in ", kMaxSkipsInARow,
                    " steps in a row (loss scale now ", st.scaler->scale(), ") in round ", round,
                    round < 0 ? " (ticket)" : "", ", particle ", first + g, ", step ", step,
                    "; lower the learning rate or train in bf16 / fp32");
        // a skipped step whose loss overflowed too counts with the epoch's mean so far
        if (!std::isfinite(x))
          x = st.epoch_steps > 0 ? st.epoch_loss[g] / static_cast<double>(st.epoch_steps) : 0.0;
      }
      check_finite(x, round, first + g, step);
      st.epoch_loss[g] += x;
    }
  };
  auto flush = [&] {
    if (pending.empty()) return;
    std::vector<at::Tensor> losses;
    for (const auto& p : pending) losses.push_back(p.second);
    const at::Tensor values = at::stack(losses).to(at::kDouble).cpu().contiguous();
    const double* v = values.const_data_ptr<double>();
    for (size_t i = 0; i < pending.size(); ++i) add_losses(v + i * G, pending[i].first);
    pending.clear();
  };
  std::vector<at::Tensor> perms(static_cast<size_t>(G));  // this epoch's orders, on the device
  int64_t perm_epoch = -1;
  for (; st.step < end;) {
    const int64_t step = st.step;
    const int64_t epoch = step / spe, b = step % spe;
    if (epoch != perm_epoch) {
      // the batches each particle asks for until the epoch (or this call) ends
      const int64_t last = std::min(spe, b + (end - step));
      for (int64_t g = 0; g < G; ++g) {
        const at::Tensor& perm = st.orders[g].epoch(epoch);
        EpochPlan plan{st.streams[g], epoch, b, last, perm, cfg_.batch_size};
        if (dp_.on())
          std::tie(plan.shard_begin, plan.shard_end) = dp_.layout.shard(cfg_.batch_size);
        data_.expect(plan);
        perms[g] = perm.to(device_);
      }
      perm_epoch = epoch;
    }
    const double lr = learning_rate(plan_.schedule, step);
    const at::Tensor losses = step_group(grp, st, epoch, b, perms, lr);
    if (sync == 1) {
      const at::Tensor v = losses.to(at::kDouble).cpu().contiguous();  // read on the host
      add_losses(v.const_data_ptr<double>(), step);
    } else {
      pending.emplace_back(step, losses);
    }
    ++st.epoch_steps;
    ++st.step;
    if (pending.size() >= sync) flush();
    bool epoch_end = false;
    if (b == spe - 1 || st.step == end) {
      flush();
      for (int64_t g = 0; g < G; ++g)
        st.last_loss[g] = st.epoch_loss[g] / static_cast<double>(st.epoch_steps);
      if (b == spe - 1 && swa && epoch >= plan_.swa_start_epoch) st.swa.update(trainable(grp));
      std::fill(st.epoch_loss.begin(), st.epoch_loss.end(), 0.0);
      st.epoch_steps = 0;
      epoch_end = b == spe - 1;
    }
    if (save.save && st.step < end) {
      // every N epochs and / or every N steps; whichever saves restarts both counts
      const bool by_epochs =
          epoch_end && save.every_epochs > 0 && ++epochs_since_save >= save.every_epochs;
      const bool by_steps = save.every_steps > 0 && ++steps_since_save >= save.every_steps;
      if (by_epochs || by_steps) {
        flush();
        save.save();
        epochs_since_save = 0;
        steps_since_save = 0;
      }
    }
    // The hooks may stop the run (Ctrl-C seen in a Python callback, or check_interrupt): the
    // state is consistent here, so it is saved first and nothing done is lost. Progress is
    // reported after the epoch's checkpoint, so what it reports is already saved.
    try {
      if (hooks_.on_epoch && (b == spe - 1 || st.step == end))
        for (int64_t g = 0; g < G; ++g)
          hooks_.on_epoch(
              Progress{round, first + g, particles, epoch + 1, cfg_.epochs, st.last_loss[g], lr});
      if (hooks_.check_interrupt) hooks_.check_interrupt();
    } catch (...) {
      if (save.save) {
        flush();
        save.save();
      }
      throw;
    }
  }
}

}  // namespace swamp::engine
