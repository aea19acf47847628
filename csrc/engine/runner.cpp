// The round loop. Reads like the algorithm:
//   ticket   = train(init, rewind steps)
//   for each round: particles = rewind(ticket, mask) -> train (+ SWA) ; final = average(particles)
//                   recompute BN ; evaluate ; mask = prune(final, mask)
#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <chrono>
#include <cmath>
#include <set>

#include "swamp/engine.h"
#include "swamp/models.h"
#include "swamp/optim.h"
#include "swamp/pruning.h"

namespace swamp {
namespace {

using Clock = std::chrono::steady_clock;

struct Plan {
  int64_t steps_per_epoch = 1;
  int64_t total_steps = 1;
  int64_t rewind_step = 0;
  int64_t swa_start_epoch = 0;
  bool swa = false;
};

struct Metrics {
  double acc = 0.0;
  double nll = 0.0;
};

class Engine {
 public:
  Engine(const Config& cfg, const Dataset& data, const Hooks& hooks)
      : cfg_(cfg), hooks_(hooks), device_(cfg.device) {
    data_ = dataset_to(data, device_);
    plan_.steps_per_epoch =
        data_.x_train.size(0) / cfg.batch_size;  // the last partial batch is dropped
    plan_.total_steps = cfg.epochs * plan_.steps_per_epoch;
    plan_.rewind_step =
        cfg.rewind_steps >= 0 ? cfg.rewind_steps : cfg.rewind_epochs * plan_.steps_per_epoch;
    TORCH_CHECK_VALUE(plan_.rewind_step < plan_.total_steps, "config.rewind_steps (",
                      plan_.rewind_step, ") must be below the total number of steps (",
                      plan_.total_steps, ")");
    plan_.swa = swa_enabled(cfg);
    plan_.swa_start_epoch = std::min<int64_t>(
        cfg.epochs - 1,
        static_cast<int64_t>(std::floor(cfg.swa_start * static_cast<double>(cfg.epochs))));
    averager_ = hooks.averager ? hooks.averager : std::make_shared<LocalAverager>();
  }

  RunResult run() {
    RunResult result;
    result.config = cfg_;
    ModelSpec spec{data_.input_shape(), data_.num_classes};
    const uint64_t init_seed = hash_seed(cfg_.seed, -2, 0, 1);

    // Models: the ticket, one per particle, and the averaged result.
    ModelPtr ticket = create_model(cfg_.model, spec, init_seed);
    ticket->to(device_);
    int64_t max_particles = 1;
    for (int64_t r = 0; r < cfg_.rounds; ++r)
      max_particles = std::max(max_particles, particles_in_round(cfg_, r));
    std::vector<ModelPtr> particles;
    for (int64_t p = 0; p < max_particles; ++p) {
      particles.push_back(create_model(cfg_.model, spec, init_seed));
      particles.back()->to(device_);
    }
    ModelPtr final_model = create_model(cfg_.model, spec, init_seed);
    final_model->to(device_);

    // Masks over the eligible weights.
    const std::vector<std::string> prunable = prunable_parameter_names(*ticket);
    TORCH_CHECK_VALUE(!prunable.empty(), "model '", cfg_.model, "' has no prunable weights");
    std::vector<std::string> eligible = prunable;
    if (cfg_.keep_first_last_dense) {
      TORCH_CHECK_VALUE(prunable.size() > 2, "config.keep_first_last_dense: model '", cfg_.model,
                        "' has only ", prunable.size(), " prunable layers");
      eligible = std::vector<std::string>(prunable.begin() + 1, prunable.end() - 1);
    }
    std::map<std::string, at::Tensor> masks;
    {
      auto named = ticket->named_parameters(true);
      for (const auto& n : eligible)
        masks[n] = at::ones_like(named[n], named[n].options().dtype(at::kBool));
    }

    // The ticket: dense training from the initialisation for the rewind steps.
    train(*ticket, {}, /*round=*/-1, /*particle=*/0, 0, plan_.rewind_step, /*swa=*/false, nullptr);

    for (int64_t round = 0; round < cfg_.rounds; ++round) {
      const auto t0 = Clock::now();
      const int64_t n = particles_in_round(cfg_, round);
      const std::vector<at::Tensor> param_masks = masks_for(*ticket, masks);
      std::vector<at::Tensor> particle_logp;
      std::vector<std::vector<at::Tensor>> particle_params;
      RoundResult rr;
      rr.round = round;
      rr.particles = n;
      double loss_sum = 0.0;
      for (int64_t p = 0; p < n; ++p) {
        Model& model = *particles[p];
        rewind(*ticket, model, masks);
        RunningAverage swa;
        loss_sum += train(model, param_masks, round, p, plan_.rewind_step, plan_.total_steps,
                          plan_.swa, &swa);
        if (plan_.swa) {
          load_parameters(model, swa.value());
          recompute_bn(model);
        }
        at::Tensor logp = log_probs(model);
        const Metrics m = metrics(logp);
        rr.particle_acc.push_back(m.acc);
        rr.particle_nll.push_back(m.nll);
        particle_logp.push_back(logp);
        particle_params.push_back(model.parameters(true));
      }
      rr.train_loss = loss_sum / static_cast<double>(n);

      // Average the particles (uniformly), then fix batch-norm statistics for the average.
      copy_state(*particles[0], *final_model);
      std::vector<at::Tensor> out = final_model->parameters(true);
      averager_->average(particle_params, out, n);
      if (n > 1 || plan_.swa) recompute_bn(*final_model);
      apply_masks(*final_model, masks);
      const Metrics fm = metrics(log_probs(*final_model));
      rr.test_acc = fm.acc;
      rr.test_nll = fm.nll;
      const Metrics em = ensemble_metrics(particle_logp);
      rr.ensemble_acc = em.acc;
      rr.ensemble_nll = em.nll;
      fill_sparsity(rr, *final_model, prunable, masks);
      rr.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      result.rounds.push_back(rr);
      if (hooks_.on_round) hooks_.on_round(rr);

      if (round + 1 < cfg_.rounds) prune(*final_model, eligible, masks);
    }

    for (const auto& kv : masks) result.masks[kv.first] = kv.second.cpu();
    for (const auto& item : final_model->named_parameters(true))
      result.state[item.key()] = item.value().detach().cpu();
    for (const auto& item : final_model->named_buffers(true))
      result.state[item.key()] = item.value().detach().cpu();
    return result;
  }

 private:
  // Per-parameter masks in parameter order (undefined where unmasked).
  std::vector<at::Tensor> masks_for(Model& model, const std::map<std::string, at::Tensor>& masks) {
    std::vector<at::Tensor> out;
    for (const auto& item : model.named_parameters(true)) {
      auto it = masks.find(item.key());
      out.push_back(it == masks.end() ? at::Tensor() : it->second);
    }
    return out;
  }

  void apply_masks(Model& model, const std::map<std::string, at::Tensor>& masks) {
    torch::NoGradGuard no_grad;
    auto named = model.named_parameters(true);
    for (const auto& kv : masks) named[kv.first].mul_(kv.second);
  }

  void rewind(const Model& ticket, Model& model, const std::map<std::string, at::Tensor>& masks) {
    copy_state(ticket, model);
    apply_masks(model, masks);
  }

  void load_parameters(Model& model, const std::vector<at::Tensor>& values) {
    torch::NoGradGuard no_grad;
    auto params = model.parameters(true);
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(values[i]);
  }

  void prune(Model& model, const std::vector<std::string>& eligible,
             std::map<std::string, at::Tensor>& masks) {
    auto named = model.named_parameters(true);
    std::vector<at::Tensor> w, m;
    for (const auto& n : eligible) {
      w.push_back(named[n].detach());
      m.push_back(masks[n]);
    }
    global_magnitude_prune_(w, m, cfg_.prune_ratio);
  }

  // Trains from global step `begin` to `end`; returns the mean loss of the last epoch trained.
  double train(Model& model, const std::vector<at::Tensor>& param_masks, int64_t round,
               int64_t particle, int64_t begin, int64_t end, bool swa, RunningAverage* swa_avg) {
    if (begin >= end) return 0.0;
    model.train(true);
    MaskedSGD opt(model.parameters(true), param_masks,
                  SgdOptions{cfg_.momentum, cfg_.nesterov, cfg_.weight_decay});
    ScheduleOptions sched;
    sched.kind = cfg_.schedule;
    sched.lr = cfg_.lr;
    sched.total_steps = plan_.total_steps;
    sched.warmup_steps = static_cast<int64_t>(
        std::llround(cfg_.warmup_epochs * static_cast<double>(plan_.steps_per_epoch)));
    sched.swa_start_step = plan_.swa ? plan_.swa_start_epoch * plan_.steps_per_epoch : -1;
    sched.swa_lr = cfg_.swa_lr;
    BatchOrder order(data_.x_train.size(0), hash_seed(cfg_.seed, round, particle));
    const int64_t B = cfg_.batch_size;
    const int64_t spe = plan_.steps_per_epoch;
    const int64_t particles = particles_in_round(cfg_, std::max<int64_t>(round, 0));
    double epoch_loss = 0.0, last_epoch_loss = 0.0;
    int64_t epoch_steps = 0;
    for (int64_t step = begin; step < end; ++step) {
      const int64_t epoch = step / spe, b = step % spe;
      const at::Tensor idx = order.epoch(epoch).narrow(0, b * B, B).to(device_);
      const at::Tensor x = data_.x_train.index_select(0, idx);
      const at::Tensor y = data_.y_train.index_select(0, idx);
      opt.zero_grad();
      at::Tensor loss = at::cross_entropy_loss(model.forward(x), y);
      loss.backward();
      const double lv = loss.item<double>();
      TORCH_CHECK(std::isfinite(lv), "training diverged: the loss is ", lv, " in round ", round,
                  round < 0 ? " (ticket)" : "", ", particle ", particle, ", step ", step,
                  "; lower the learning rate");
      const double lr = learning_rate(sched, step);
      opt.step(lr);
      epoch_loss += lv;
      ++epoch_steps;
      if (b == spe - 1 || step + 1 == end) {
        last_epoch_loss = epoch_loss / static_cast<double>(epoch_steps);
        if (b == spe - 1 && swa && swa_avg != nullptr && epoch >= plan_.swa_start_epoch)
          swa_avg->update(model.parameters(true));
        if (hooks_.on_epoch)
          hooks_.on_epoch(
              Progress{round, particle, particles, epoch + 1, cfg_.epochs, last_epoch_loss, lr});
        epoch_loss = 0.0;
        epoch_steps = 0;
      }
      if (hooks_.check_interrupt) hooks_.check_interrupt();
    }
    return last_epoch_loss;
  }

  void recompute_bn(Model& model) {
    const int64_t B = cfg_.bn_batch_size > 0 ? cfg_.bn_batch_size : cfg_.batch_size;
    const int64_t n = data_.x_train.size(0);
    recompute_batchnorm(model, [&] {
      for (int64_t s = 0; s + B <= n || s == 0; s += B) {
        const int64_t len = std::min(B, n - s);
        model.forward(data_.x_train.narrow(0, s, len));
        if (hooks_.check_interrupt) hooks_.check_interrupt();
      }
    });
  }

  at::Tensor log_probs(Model& model) {
    torch::NoGradGuard no_grad;
    const bool was_training = model.is_training();
    model.train(false);
    std::vector<at::Tensor> parts;
    const int64_t n = data_.x_test.size(0);
    for (int64_t s = 0; s < n; s += cfg_.eval_batch_size) {
      const int64_t len = std::min(cfg_.eval_batch_size, n - s);
      parts.push_back(at::log_softmax(model.forward(data_.x_test.narrow(0, s, len)), 1));
    }
    model.train(was_training);
    return at::cat(parts, 0);
  }

  Metrics metrics(const at::Tensor& logp) {
    Metrics m;
    m.acc = logp.argmax(1).eq(data_.y_test).to(at::kDouble).mean().item<double>();
    m.nll = at::nll_loss(logp.to(at::kDouble), data_.y_test).item<double>();
    return m;
  }

  Metrics ensemble_metrics(const std::vector<at::Tensor>& logps) {
    if (logps.size() == 1) return metrics(logps[0]);
    at::Tensor stacked = at::stack(logps, 0).to(at::kDouble);
    return metrics(at::logsumexp(stacked, {0}) - std::log(static_cast<double>(logps.size())));
  }

  void fill_sparsity(RoundResult& rr, Model& model, const std::vector<std::string>& prunable,
                     const std::map<std::string, at::Tensor>& masks) {
    auto named = model.named_parameters(true);
    int64_t all = 0, all_kept = 0;
    for (const auto& n : prunable) {
      const int64_t numel = named[n].numel();
      auto it = masks.find(n);
      const int64_t kept = it == masks.end() ? numel : it->second.sum().item<int64_t>();
      all += numel;
      all_kept += kept;
      if (it != masks.end()) {
        rr.prunable += numel;
        rr.remaining += kept;
      }
      rr.layer_density.emplace_back(n, static_cast<double>(kept) / static_cast<double>(numel));
    }
    rr.sparsity = 1.0 - static_cast<double>(rr.remaining) / static_cast<double>(rr.prunable);
    rr.sparsity_all = 1.0 - static_cast<double>(all_kept) / static_cast<double>(all);
  }

  const Config& cfg_;
  const Hooks& hooks_;
  c10::Device device_;
  Dataset data_;
  Plan plan_;
  std::shared_ptr<ParticleAverager> averager_;
};

}  // namespace

RunResult run_imp(const Config& cfg, const Dataset& data, const Hooks& hooks) {
  validate_config(cfg);
  const c10::Device dev(cfg.device);
  TORCH_CHECK_VALUE(!dev.is_cuda() || at::hasCUDA(), "config.device is '", cfg.device,
                    "' but this torch build has no usable CUDA device");
  validate_dataset(data, cfg.batch_size);
  Engine engine(cfg, data, hooks);
  return engine.run();
}

}  // namespace swamp
