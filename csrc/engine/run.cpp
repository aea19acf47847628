// The round loop. Reads like the algorithm:
//   ticket = train(init, rewind steps)
//   for each round: particles = rewind(ticket, mask) -> train (+ SWA) ; final = average(particles)
//                   mask final ; recompute BN ; evaluate ; mask = prune(final, mask)
// Each step lives in its own room: plan.h (steps and schedule), particles.h (models, groups,
// rewind), trainer.h (SGD + SWA of a group), masks.h (pruning), evaluation.h (BN, metrics),
// checkpoint_codec.h (resume). Every stage can be checkpointed and resumed bit for bit (see
// swamp/engine.h): resume is re-entering this loop with the recorded progress.
#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "../common/default_generator.h"
#include "../common/determinism.h"
#include "../common/lanes.h"
#include "../evaluation/evaluation.h"
#include "checkpoint_codec.h"
#include "masks.h"
#include "particles.h"
#include "plan.h"
#include "run_plan.h"
#include "swamp/layers.h"
#include "trainer.h"

namespace swamp {
namespace engine {
namespace {

using Clock = std::chrono::steady_clock;

class Run {
 public:
  // `run_plan`: the run's plan; its channels_last decided already when `planned` (plan_run),
  // otherwise here from the run's own model.
  Run(const Config& cfg, const RunParts& parts, const Hooks& hooks, const CheckpointOptions& ck,
      RunPlan run_plan, bool planned)
      : cfg_(cfg),
        source_(*parts.model),
        data_(*parts.data),
        processes_(*parts.processes),
        averager_(*parts.averager),
        plan_(make_plan(cfg, data_.train_size())),
        run_plan_(std::move(run_plan)),
        planned_(planned),
        models_(cfg, source_, ModelSpec{data_.input_shape(), data_.num_classes()}, data_.device(),
                run_plan_.max_particles(), initial_weights_seed(cfg.seed)),
        masks_(models_.ticket(), source_.prunable(models_.ticket()), cfg.keep_first_last_dense),
        trainer_(cfg, plan_, data_, hooks),
        eval_(cfg, data_),
        checkpoint_(ck, cfg, plan_, source_.identity(), data_),
        hooks_(hooks),
        fresh_(ck.fresh) {}

  RunResult run() {
    check_model();
    masks_.check_strategy(cfg_.pruning);
    agree_on_setup();
    ResumedGroup resumed;
    // spread over processes, the primary alone replaces a checkpoint (fresh) and writes them
    if ((processes_.primary() || !fresh_) && checkpoint_.resumable()) {
      resumed = checkpoint_.restore(p_, models_, masks_, [&](Group& g) { return start(g); });
      TORCH_CHECK_VALUE(!processes_.spread() || (p_.particles_done == 0 && !resumed.state),
                        "checkpoint ", checkpoint_.path(), " stopped inside round ", p_.rounds_done,
                        " (", p_.particles_done,
                        " particles done, written by a single-process run); a distributed run "
                        "resumes from the end of a round: finish it in one process or start "
                        "fresh");
    }
    processes_.agree("progress (is the checkpoint folder the same for every process?)",
                     {{"ticket_done", std::to_string(p_.ticket_done)},
                      {"rounds_done", std::to_string(p_.rounds_done)},
                      {"masks_round", std::to_string(p_.masks_round)}});
    if (hooks_.on_restore && !p_.results.empty()) hooks_.on_restore(p_.results);
    if (!p_.ticket_done) train_ticket();
    if (hooks_.on_ticket) hooks_.on_ticket(state_of(models_.ticket()));
    for (int64_t round = p_.rounds_done; round < cfg_.rounds; ++round) {
      round_t0_ = Clock::now();
      if (p_.masks_round < round) prune_for(round);  // a finished run extended with more rounds
      const int64_t n = run_plan_.particles.at(static_cast<size_t>(round));
      // this process's particles of the round (all of them unless spread over processes)
      const ProcessLayout layout = processes_.layout(n);
      p_.particles_done = std::max(p_.particles_done, layout.first);
      while (p_.particles_done < layout.last) train_particles(round, n, layout.last, resumed);
      RoundResult rr = average_and_evaluate(round, n);
      if (hooks_.on_models) report_models(round, n);
      p_.results.push_back(rr);
      p_.rounds_done = round + 1;
      p_.particles_done = 0;
      p_.losses.clear();
      p_.skipped.clear();
      if (round + 1 < cfg_.rounds) prune_for(round + 1);
      save();
      if (hooks_.on_round) hooks_.on_round(rr);
    }
    return result();
  }

 private:
  // ---- the steps of the algorithm -------------------------------------------------------------
  // The ticket is one particle: with several processes they all train it, data-parallel.
  // Without data parallel (one process per particle), the first process trains it and gives it to
  // the others.
  void train_ticket() {
    Group g = ParticleModels::single_group(models_.ticket());
    const ProcessLayout layout = processes_.layout(1);
    if (layout.first < layout.last) {
      ParticleState t = trainer_.start(g, masks_.map(), -1, 0, 0);
      trainer_.train(g, t, -1, 0, plan_.rewind_step, false, SavePoints{}, data_parallel(1));
    }
    if (layout.per_particle < layout.world) share_ticket(layout);
    p_.ticket_done = true;
    save();
  }

  // The ticket's parameters and buffers, from the process that trained it to every other.
  void share_ticket(const ProcessLayout& layout) {
    torch::NoGradGuard no_grad;
    const bool mine = layout.first < layout.last;
    if (mine) layers::disable_sparse(models_.ticket());  // its dense parameters, as everywhere
    auto share = [&](at::Tensor t) {
      std::vector<at::Tensor> local;
      if (mine) local.push_back(t.detach());
      const std::vector<at::Tensor> all = processes_.gather(local, 1);
      if (!mine) t.detach().copy_(all.at(0));
    };
    for (auto& item : models_.ticket().named_parameters(true)) share(item.value());
    for (auto& item : models_.ticket().named_buffers(true)) share(item.value());
  }

  // How this process trains its particle of a round of n together with others (if it does).
  DataParallel data_parallel(int64_t n) {
    DataParallel dp{processes_.layout(n), {}, {}};
    if (dp.on()) {
      dp.sum = [this, n](std::vector<at::Tensor>& t) { processes_.sum_in_group(n, t); };
      dp.start = [this, n](const at::Tensor& flat) {
        return processes_.start_sum_in_group(n, flat);
      };
    }
    return dp;
  }

  // The particles still to train in a round of n, up to `last`, as one group (a resumed group keeps
  // the way it was started): rewind to the ticket under the mask, train (+ SWA), collect.
  void train_particles(int64_t round, int64_t n, int64_t last, ResumedGroup& resumed) {
    const int64_t first = p_.particles_done;
    Group grp;
    std::unique_ptr<ParticleState> st;
    if (resumed.state) {
      grp = std::move(resumed.group);
      st = std::move(resumed.state);
    } else {
      grp = models_.group_for(n, first, last);
      for (Model* m : grp.models) models_.rewind(*m, grp.per_model, masks_);
      st = std::make_unique<ParticleState>(start(grp, round, first));
    }
    // spread over processes, each holds only its own particles' state: saved at round ends only
    trainer_.train(grp, *st, round, first, plan_.total_steps, plan_.swa,
                   processes_.spread()
                       ? SavePoints{}
                       : SavePoints{[&] { save(st.get(), &grp); }, checkpoint_.every_epochs(),
                                    checkpoint_.every_steps()},
                   data_parallel(n));
    // The particles' SWA solutions (or last weights) into their own models.
    const int64_t group = grp.particles();
    for (size_t k = 0; k < grp.models.size(); ++k) {
      if (plan_.swa) load_trainable(*grp.models[k], st->swa.value(), grp.first[k]);
      layers::disable_sparse(*grp.models[k]);
    }
    for (int64_t g = 0; g < group; ++g) {
      if (grp.per_model > 1)
        models_.copy_out(*grp.models[g / grp.per_model], grp.per_model, g % grp.per_model,
                         first + g);
      p_.losses.push_back(st->last_loss[g]);
      p_.skipped.push_back(st->scaler ? st->skipped[g] : 0);
    }
    // the SWA solutions' BN statistics, side by side (a data-parallel group shares the batches)
    if (plan_.swa && cfg_.diagnostics) {
      const int64_t lanes = post_lanes(n);
      const Sharding sh = in_group(n);
      run_lanes(lanes, [&](int64_t lane) {
        for (int64_t g = lane; g < group; g += lanes) {
          Model& m = models_.particle(first + g);
          const layers::SparseScope sparse = sparse_passes(m);
          eval_.recompute_bn(m, sh);
        }
      });
    }
    p_.particles_done = first + group;
    if (!processes_.spread()) save();
  }

  // Average the particles uniformly, mask the average, recompute its batch-norm statistics,
  // evaluate it and the particles' ensemble. Spread over processes, each evaluates its own
  // particles and gathers everyone's outputs, losses and weights: the figures, the average and
  // so the next mask are those one process holding all particles computes.
  RoundResult average_and_evaluate(int64_t round, int64_t n) {
    RoundResult rr;
    rr.round = round;
    rr.particles = n;
    const ProcessLayout layout = processes_.layout(n);
    rr.processes = layout.world;
    rr.processes_per_particle = layout.per_particle;
    // the particles this process speaks for (its own, or none where another member of its
    // data-parallel group does)
    const std::pair<int64_t, int64_t> mine_range = layout.contributes();
    const int64_t first = mine_range.first, last = mine_range.second;  // captured below (C++17)
    // diagnostics: every particle evaluated (its figures, the prediction ensemble); a
    // data-parallel group shares its particle's test batches
    std::vector<at::Tensor> logp;
    if (cfg_.diagnostics) {
      std::vector<at::Tensor> held(static_cast<size_t>(layout.last - layout.first));
      const int64_t lanes = post_lanes(n);
      const Sharding sh = in_group(n);
      run_lanes(lanes, [&](int64_t lane) {
        for (int64_t p = layout.first + lane; p < layout.last; p += lanes) {
          const layers::SparseScope sparse = sparse_passes(models_.particle(p));
          held[p - layout.first] = eval_.log_probs(models_.particle(p), sh);
        }
      });
      std::vector<at::Tensor> mine(held.begin(), held.begin() + (last - first));
      logp = processes_.gather(mine, n);
      for (int64_t p = 0; p < n; ++p) {
        const Metrics m = eval_.metrics(logp[p]);
        rr.particle_acc.push_back(m.acc);
        rr.particle_nll.push_back(m.nll);
      }
    }
    const std::vector<double> losses = gathered_losses(n);
    double loss_sum = 0.0;
    for (int64_t p = 0; p < n; ++p) loss_sum += losses[p];
    rr.train_loss = loss_sum / static_cast<double>(n);
    if (cfg_.precision == "fp16")  // the only precision that skips steps: no gather otherwise
      for (double k : gathered_values(p_.skipped, n)) rr.skipped_steps += static_cast<int64_t>(k);
    Model& avg = models_.average();
    {  // particle 0's buffers (from the process that trained it); the weights are averaged below
      torch::NoGradGuard no_grad;
      std::vector<at::Tensor> buffers = avg.buffers(true);
      const auto every = gathered(n, [](Model& m) { return m.buffers(true); });
      for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(every[i][0]);
    }
    std::vector<at::Tensor> out = avg.parameters(true);
    {  // every particle's weights in particle order (from the other processes when spread)
      const auto every = gathered(n, [](Model& m) { return m.parameters(true); });
      std::vector<std::vector<at::Tensor>> particles(static_cast<size_t>(n));
      for (size_t i = 0; i < every.size(); ++i)
        for (int64_t p = 0; p < n; ++p) particles[p].push_back(every[i][p].to(out[i].device()));
      averager_.average(particles, out);
    }
    masks_.apply(avg);  // BN statistics are computed for exactly the weights evaluated
    // every process holds the average: they share its batch-norm and test batches
    Metrics fm;
    const Sharding everyone = over_all();
    if (n > 1 || plan_.swa) {
      const layers::SparseScope sparse = sparse_passes(avg);
      eval_.recompute_bn(avg, everyone);
      fm = eval_.metrics(eval_.log_probs(avg, everyone));
    } else if (!logp.empty()) {  // one particle without SWA: the average is that particle
      fm = eval_.metrics(logp[0]);
    } else {  // the same model, not yet evaluated (its training batch-norm statistics kept)
      const layers::SparseScope sparse = sparse_passes(avg);
      fm = eval_.metrics(eval_.log_probs(avg, everyone));
    }
    rr.test_acc = fm.acc;
    rr.test_nll = fm.nll;
    rr.test_ece = fm.ece;
    if (cfg_.diagnostics) {
      const Metrics em = eval_.ensemble_metrics(logp);
      rr.ensemble_acc = em.acc;
      rr.ensemble_nll = em.nll;
      rr.ensemble_ece = em.ece;
    } else {
      rr.ensemble_acc = rr.ensemble_nll = rr.ensemble_ece = std::nan("");
    }
    masks_.fill_sparsity(avg, rr);
    rr.seconds = p_.round_seconds + std::chrono::duration<double>(Clock::now() - round_t0_).count();
    p_.round_seconds = 0.0;
    round_t0_ = Clock::now();
    return rr;
  }

  // A pass over this process's particle shared by the members of its data-parallel group (alone
  // otherwise).
  Sharding in_group(int64_t n) {
    const ProcessLayout l = processes_.layout(n);
    if (l.per_particle == 1 || l.first == l.last) return {};
    return {l.group_rank, l.per_particle,
            [this, n](std::vector<at::Tensor>& t) { processes_.sum_in_group(n, t); }};
  }
  // A pass over the average shared by every process of the run.
  Sharding over_all() {
    const int64_t world = processes_.layout(1).world;
    if (world == 1) return {};
    return {processes_.rank(), world,
            [this](std::vector<at::Tensor>& t) { processes_.sum_over_all(t); }};
  }

  // Tensor i of every particle of a round of n, all[i][p], from this process's particles'
  // tensors_of(model) (gathered from the others when spread over processes).
  template <typename F>
  std::vector<std::vector<at::Tensor>> gathered(int64_t n, F&& tensors_of) {
    const auto [first, last] = processes_.layout(n).contributes();
    std::vector<std::vector<at::Tensor>> mine;
    for (int64_t p = first; p < last; ++p) mine.push_back(tensors_of(models_.particle(p)));
    // the same for every particle (one architecture); a process without particles asks the average
    const size_t count = mine.empty() ? tensors_of(models_.average()).size() : mine[0].size();
    std::vector<std::vector<at::Tensor>> all(count);
    for (size_t i = 0; i < count; ++i) {
      std::vector<at::Tensor> local;
      for (const auto& m : mine) local.push_back(m.at(i));
      all[i] = processes_.gather(local, n);
    }
    return all;
  }

  // The last-epoch training loss of every particle of the round (this process holds its own).
  std::vector<double> gathered_losses(int64_t n) { return gathered_values(p_.losses, n); }

  // Every particle's value, from the processes that trained them (`values`: of the particles
  // this process trained, of which it gives those it speaks for).
  template <typename T>
  std::vector<double> gathered_values(const std::vector<T>& values, int64_t n) {
    const ProcessLayout l = processes_.layout(n);
    const auto [first, last] = l.contributes();
    std::vector<at::Tensor> mine;
    for (int64_t p = first; p < last; ++p)
      mine.push_back(at::full({}, static_cast<double>(values.at(p - l.first)), at::kDouble));
    std::vector<double> out;
    for (const auto& t : processes_.gather(mine, n)) out.push_back(t.item<double>());
    return out;
  }

  // Every process must run the same configuration (the device aside: one per process) on the
  // same data with the same model; the first difference is named.
  void agree_on_setup() {
    std::vector<std::pair<std::string, std::string>> fields;
    for (const auto& kv : config_fields(cfg_))
      if (kv.first != "device") fields.push_back(kv);
    processes_.agree("configuration", fields);
    processes_.agree("model and data", {{"model", source_.identity()},
                                        {"data", data_.fingerprint()},
                                        {"prunable", std::to_string(masks_.map().size())}});
  }

  // The mask of `round`: prune the previous round's average.
  void prune_for(int64_t round) {
    // the random control's positions: a stream of its own per round (unrelated to batch orders)
    masks_.prune(models_.average(), cfg_.prune_ratio, cfg_.pruning,
                 hash_seed(cfg_.seed, round, 0, /*stream=*/0x70e7), round);
    p_.masks_round = round;
  }

  static std::map<std::string, at::Tensor> state_of(const torch::nn::Module& m) {
    std::map<std::string, at::Tensor> out;
    for (const auto& item : m.named_parameters(true))
      out[item.key()] = item.value().detach().cpu().clone();
    for (const auto& item : m.named_buffers(true))
      out[item.key()] = item.value().detach().cpu().clone();
    return out;
  }
  void report_models(int64_t round, int64_t n) {
    RoundModels rm;
    rm.round = round;
    rm.average = state_of(models_.average());
    if (hooks_.models_with_particles) {  // every particle's, from the process that trained it
      auto values = [](Model& m) {
        std::vector<at::Tensor> v;
        for (const auto& kv : state_of(m)) v.push_back(kv.second);
        return v;
      };
      const auto every = gathered(n, values);
      rm.particles.resize(static_cast<size_t>(n));
      size_t i = 0;
      for (const auto& kv : rm.average) {  // state_of's (sorted) name order
        for (int64_t p = 0; p < n; ++p) rm.particles[p][kv.first] = every[i][p].cpu();
        ++i;
      }
    }
    for (const auto& kv : masks_.map()) rm.masks[kv.first] = kv.second.cpu().clone();
    hooks_.on_models(rm);
  }

  // The model answers a few test inputs with [batch, classes] floating-point logits and leaves
  // its parameters alone (whatever the source: a user's module is checked before it trains).
  void check_model() {
    Model& m = models_.ticket();
    const int64_t len = std::min<int64_t>(data_.test_size(), 8);
    const Batch b = data_.test_batch(0, len);
    std::vector<std::pair<std::string, int64_t>> before;
    for (const auto& item : m.named_parameters(true))
      before.emplace_back(item.key(), static_cast<int64_t>(item.value()._version()));
    const bool was_training = m.is_training();
    m.train(false);
    at::Tensor out;
    {
      torch::NoGradGuard no_grad;
      out = forward(m, b);
    }
    m.train(was_training);
    size_t i = 0;
    for (const auto& item : m.named_parameters(true)) {
      TORCH_CHECK_VALUE(static_cast<int64_t>(item.value()._version()) == before.at(i++).second,
                        "the model (", source_.identity(), ") changed its parameter '", item.key(),
                        "' during forward; it must not modify its parameters in place");
    }
    TORCH_CHECK_VALUE(
        out.defined() && out.dim() == 2 && out.size(0) == len && out.size(1) == data_.num_classes(),
        "the model (", source_.identity(), ") answers a batch of ", len, " inputs with shape ",
        out.defined() ? out.sizes() : at::IntArrayRef{}, "; expected logits [", len, ", ",
        data_.num_classes(), "] (", len, " samples, ", data_.num_classes(), " classes)");
    TORCH_CHECK_TYPE(at::isFloatingType(out.scalar_type()), "the model (", source_.identity(),
                     ") returns ", out.scalar_type(), " logits; expected a floating-point type");
    // Random numbers in training mode (dropout, stochastic depth, noise layers): one train-mode
    // forward, the default generator's state compared before and after (the generator and the
    // model's buffers put back). Such a model's training forwards are seeded per particle and
    // step (Trainer), and its particles do not share the generator on threads.
    channels_last_ = planned_ ? run_plan_.channels_last : channels_last_on(cfg_, m, data_.device());
    run_plan_.channels_last = channels_last_;
    trainer_.set_channels_last(channels_last_);
    const bool draws = draws_random(m, b);
    models_.set_draws_random(draws);
    trainer_.set_draws_random(draws);
    TORCH_CHECK_VALUE(!draws || cfg_.particle_mode != "threads",
                      engine::threads_refusal(source_.identity()));
  }

  bool draws_random(Model& m, const Batch& b) {
    at::Generator gen = at::globalContext().defaultGenerator(data_.device());
    at::Tensor before, after;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      before = gen.get_state();
    }
    std::vector<at::Tensor> buffers;
    for (const auto& t : m.buffers(true)) buffers.push_back(t.detach().clone());
    const bool was_training = m.is_training();
    m.train(true);
    {
      torch::NoGradGuard no_grad;
      forward(m, b);
      auto now = m.buffers(true);
      for (size_t i = 0; i < now.size(); ++i) now[i].copy_(buffers[i]);
    }
    m.train(was_training);
    std::lock_guard<std::mutex> lock(gen.mutex());
    after = gen.get_state();
    gen.set_state(before);
    return !at::equal(before, after);
  }

  // ---- plumbing -----------------------------------------------------------------------------
  // Training state of a group; its linear layers at or below the density threshold train with
  // sparse kernels (CPU only).
  ParticleState start(Group& grp, int64_t round, int64_t first) {
    for (Model* m : grp.models)
      layers::enable_sparse(*m, masks_.map(), sparse_mode(), cfg_.sparse_density,
                            cfg_.sparse_conv_density);
    return trainer_.start(grp, masks_.map(), round, first, plan_.rewind_step);
  }
  // The sparse kernels are CPU only.
  std::string sparse_mode() const { return data_.device().is_cpu() ? cfg_.sparse_kernels : "off"; }
  // The passes over the data after training (batch-norm statistics, evaluation) on the same
  // kernels as training, for as long as the scope lives.
  layers::SparseScope sparse_passes(Model& m) const {
    return {m, masks_.map(), sparse_mode(), cfg_.sparse_density, cfg_.sparse_conv_density};
  }
  ParticleState start(Group& grp) { return start(grp, p_.rounds_done, p_.particles_done); }
  // Lanes for the passes over the data after training (batch norm, evaluation) in a round of n.
  int64_t post_lanes(int64_t n) const {
    return data_.concurrent_scans() ? models_.post_lanes(n) : 1;
  }

  void save(const ParticleState* cur = nullptr, const Group* grp = nullptr) {
    if (!processes_.primary()) return;
    checkpoint_.save(
        p_, models_, masks_,
        p_.round_seconds + std::chrono::duration<double>(Clock::now() - round_t0_).count(), cur,
        grp);
  }

  RunResult result() {
    RunResult r;
    r.config = cfg_;
    r.plan = run_plan_;
    r.channels_last = channels_last_;
    r.rounds = p_.results;
    // A run restored from a finished checkpoint (or cut to fewer rounds) returns what it has.
    if (static_cast<int64_t>(r.rounds.size()) > cfg_.rounds) r.rounds.resize(cfg_.rounds);
    for (const auto& kv : masks_.map()) r.masks[kv.first] = kv.second.cpu();
    for (const auto& item : models_.average().named_parameters(true))
      r.state[item.key()] = item.value().detach().cpu();
    for (const auto& item : models_.average().named_buffers(true))
      r.state[item.key()] = item.value().detach().cpu();
    return r;
  }

  const Config& cfg_;
  const ModelSource& source_;
  BatchSource& data_;
  Processes& processes_;
  ParticleAverager& averager_;
  Plan plan_;
  RunPlan run_plan_;
  const bool planned_;
  ParticleModels models_;
  Masks masks_;
  Trainer trainer_;
  Evaluator eval_;
  RunCheckpoint checkpoint_;
  const Hooks& hooks_;
  const bool fresh_;
  bool channels_last_ = false;
  RunProgress p_;
  Clock::time_point round_t0_ = Clock::now();
};

}  // namespace
}  // namespace engine

uint64_t initial_weights_seed(uint64_t run_seed) { return hash_seed(run_seed, -2, 0, 1); }

namespace {
// `plan` decided channels_last already when `planned` (plan_run).
RunResult run_with(const RunRequest& request, RunPlan plan, bool planned) {
  const Config& cfg = request.config;
  TORCH_CHECK_VALUE(static_cast<int64_t>(plan.particles.size()) == cfg.rounds,
                    "run_imp: the plan has ", plan.particles.size(), " rounds, Config.rounds is ",
                    cfg.rounds, " (a plan from plan_run for another configuration?)");
  const c10::Device dev(plan.device);
  TORCH_CHECK_VALUE(request.parts.data != nullptr, "run_imp: no batch source (RunParts.data)");
  TORCH_CHECK_VALUE(request.parts.data->device() == dev, "run_imp: the batch source serves ",
                    request.parts.data->device(), " but Config.device is ", cfg.device);
  RunParts parts = request.parts;
  if (!parts.model) parts.model = std::make_shared<ZooModelSource>(cfg.model);
  if (!parts.processes) parts.processes = std::make_shared<Processes>();
  if (!parts.averager) parts.averager = std::make_shared<UniformAverager>();
  DeterminismGuard determinism(cfg.deterministic, dev);
  // the forward passes draw from torch's default generators in the run's own streams; the
  // caller's streams are as they were afterwards
  const GeneratorStateGuard callers_streams(dev);
  engine::Run run(cfg, parts, request.hooks, request.checkpoint, std::move(plan), planned);
  return run.run();
}
}  // namespace

RunResult run_imp(const RunRequest& request) {
  if (request.plan) return run_with(request, *request.plan, /*planned=*/true);
  return run_with(
      request, engine::plan_without_model(request.config, request.parts.model == nullptr), false);
}

RunResult run_imp(const Config& cfg, const RunParts& parts, const Hooks& hooks,
                  const CheckpointOptions& checkpoint) {
  return run_imp(RunRequest{cfg, parts, hooks, checkpoint, nullptr});
}

RunResult run_imp(const Config& cfg, const Dataset& data, const Hooks& hooks,
                  const CheckpointOptions& checkpoint) {
  RunPlan plan = engine::plan_without_model(cfg, /*check_model=*/true);
  Augment aug;
  if (cfg.augment) aug = Augment{cfg.crop_padding, cfg.flip};
  RunRequest request{cfg, {}, hooks, checkpoint, nullptr};
  // validates the data; a training set smaller than one batch is refused by the plan
  request.parts.data = std::make_shared<TensorBatchSource>(data, c10::Device(plan.device), aug);
  return run_with(request, std::move(plan), /*planned=*/false);
}

}  // namespace swamp
