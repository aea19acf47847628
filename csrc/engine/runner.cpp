// The round loop. Reads like the algorithm:
//   ticket = train(init, rewind steps)
//   for each round: particles = rewind(ticket, mask) -> train (+ SWA) ; final = average(particles)
//                   recompute BN ; evaluate ; mask = prune(final, mask)
// Every stage can be checkpointed and resumed bit for bit (see swamp/engine.h).
#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <sys/stat.h>
#include <torch/types.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "../common/lanes.h"
#include "swamp/checkpoint.h"
#include "swamp/engine.h"
#include "swamp/layers.h"
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

at::Tensor scalar_i(int64_t v) { return at::full({}, v, at::kLong); }
at::Tensor scalar_d(double v) { return at::full({}, v, at::kDouble); }
int64_t get_i(const TensorMap& m, const std::string& k) {
  auto it = m.find(k);
  TORCH_CHECK(it != m.end(), "checkpoint is missing '", k, "'");
  return it->second.item<int64_t>();
}
double get_d(const TensorMap& m, const std::string& k) {
  auto it = m.find(k);
  TORCH_CHECK(it != m.end(), "checkpoint is missing '", k, "'");
  return it->second.item<double>();
}
const at::Tensor& get_t(const TensorMap& m, const std::string& k) {
  auto it = m.find(k);
  TORCH_CHECK(it != m.end(), "checkpoint is missing '", k, "'");
  return it->second;
}

void save_module(TensorMap& out, const std::string& prefix, const torch::nn::Module& m) {
  for (const auto& item : m.named_parameters(true))
    out[prefix + item.key()] = item.value().detach();
  for (const auto& item : m.named_buffers(true)) out[prefix + item.key()] = item.value().detach();
}
void load_module(const TensorMap& in, const std::string& prefix, torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& item : m.named_parameters(true)) item.value().copy_(get_t(in, prefix + item.key()));
  for (auto& item : m.named_buffers(true)) item.value().copy_(get_t(in, prefix + item.key()));
}

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// RoundResult <-> text (exact: doubles printed with 17 significant digits).
std::string encode_round(const RoundResult& r) {
  std::ostringstream o;
  o << "round=" << r.round << "\nparticles=" << r.particles << "\nremaining=" << r.remaining
    << "\nprunable=" << r.prunable;
  const std::pair<const char*, double> ds[] = {
      {"sparsity", r.sparsity},         {"sparsity_all", r.sparsity_all},
      {"test_acc", r.test_acc},         {"test_nll", r.test_nll},
      {"ensemble_acc", r.ensemble_acc}, {"ensemble_nll", r.ensemble_nll},
      {"train_loss", r.train_loss},     {"seconds", r.seconds}};
  for (const auto& d : ds) o << "\n" << d.first << "=" << fmt_double(d.second);
  for (double v : r.particle_acc) o << "\nparticle_acc=" << fmt_double(v);
  for (double v : r.particle_nll) o << "\nparticle_nll=" << fmt_double(v);
  for (const auto& kv : r.layer_density)
    o << "\nlayer=" << fmt_double(kv.second) << " " << kv.first;
  return o.str();
}

RoundResult decode_round(const std::string& s) {
  RoundResult r;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    const double d = std::strtod(v.c_str(), nullptr);
    if (k == "round")
      r.round = std::stoll(v);
    else if (k == "particles")
      r.particles = std::stoll(v);
    else if (k == "remaining")
      r.remaining = std::stoll(v);
    else if (k == "prunable")
      r.prunable = std::stoll(v);
    else if (k == "sparsity")
      r.sparsity = d;
    else if (k == "sparsity_all")
      r.sparsity_all = d;
    else if (k == "test_acc")
      r.test_acc = d;
    else if (k == "test_nll")
      r.test_nll = d;
    else if (k == "ensemble_acc")
      r.ensemble_acc = d;
    else if (k == "ensemble_nll")
      r.ensemble_nll = d;
    else if (k == "train_loss")
      r.train_loss = d;
    else if (k == "seconds")
      r.seconds = d;
    else if (k == "particle_acc")
      r.particle_acc.push_back(d);
    else if (k == "particle_nll")
      r.particle_nll.push_back(d);
    else if (k == "layer") {
      const auto sp = v.find(' ');
      r.layer_density.emplace_back(v.substr(sp + 1), std::strtod(v.substr(0, sp).c_str(), nullptr));
    }
  }
  return r;
}

std::string encode_config(const Config& c) {
  std::string s;
  for (const auto& kv : config_fields(c)) s += kv.first + "=" + kv.second + "\n";
  return s;
}

// The models a group of particles trains in: one model holding them all (stacked, or a single
// particle), or one model per particle trained side by side in `lanes` threads (threads path).
struct Group {
  std::vector<Model*> models;
  int64_t per_model = 1;  // particles per model
  int64_t lanes = 1;      // threads path: particles trained at once
  // Model k's tensors are [first[k], first[k + 1]) of the group's optimizer (size K + 1).
  std::vector<size_t> first;
  int64_t particles() const { return static_cast<int64_t>(models.size()) * per_model; }
};

// Everything the training of a group of particles (one, or several stacked in one model) needs to
// continue from any step. Vectors hold one entry per particle of the group.
struct ParticleState {
  int64_t step = 0;
  MaskedSGD opt;
  std::vector<BatchOrder> orders;
  RunningAverage swa;
  std::vector<double> epoch_loss;
  int64_t epoch_steps = 0;
  std::vector<double> last_loss;

  int64_t size() const { return static_cast<int64_t>(orders.size()); }

  void save(TensorMap& out, const std::string& pre) const {
    out[pre + "step"] = scalar_i(step);
    out[pre + "group"] = scalar_i(size());
    const auto& bufs = opt.momentum_buffers();
    out[pre + "momentum_count"] = scalar_i(static_cast<int64_t>(bufs.size()));
    for (size_t i = 0; i < bufs.size(); ++i)
      if (bufs[i].defined()) out[pre + "momentum/" + std::to_string(i)] = bufs[i].detach();
    out[pre + "swa_count"] = scalar_i(swa.count());
    for (size_t i = 0; i < swa.value().size(); ++i)
      out[pre + "swa/" + std::to_string(i)] = swa.value()[i];
    for (size_t g = 0; g < orders.size(); ++g) {
      const std::string q = pre + std::to_string(g) + "/";
      const BatchOrder::State o = orders[g].state();
      out[q + "order/generator"] = o.generator;
      out[q + "order/current"] = scalar_i(o.current);
      if (o.perm.defined()) out[q + "order/perm"] = o.perm;
      out[q + "epoch_loss"] = scalar_d(epoch_loss[g]);
      out[q + "last_loss"] = scalar_d(last_loss[g]);
    }
    out[pre + "epoch_steps"] = scalar_i(epoch_steps);
  }

  void load(const TensorMap& in, const std::string& pre, const c10::Device& dev) {
    step = get_i(in, pre + "step");
    TORCH_CHECK(get_i(in, pre + "group") == size(), "checkpoint: particle group size differs");
    const int64_t nb = get_i(in, pre + "momentum_count");
    std::vector<at::Tensor> bufs(static_cast<size_t>(nb));
    for (int64_t i = 0; i < nb; ++i) {
      auto it = in.find(pre + "momentum/" + std::to_string(i));
      if (it != in.end()) bufs[i] = it->second.to(dev);
    }
    opt.set_momentum_buffers(std::move(bufs));
    const int64_t sc = get_i(in, pre + "swa_count");
    std::vector<at::Tensor> avg;
    for (int64_t i = 0; sc > 0; ++i) {
      auto it = in.find(pre + "swa/" + std::to_string(i));
      if (it == in.end()) break;
      avg.push_back(it->second.to(dev));
    }
    swa.restore(std::move(avg), sc);
    for (size_t g = 0; g < orders.size(); ++g) {
      const std::string q = pre + std::to_string(g) + "/";
      BatchOrder::State o;
      o.generator = get_t(in, q + "order/generator");
      o.current = get_i(in, q + "order/current");
      auto it = in.find(q + "order/perm");
      if (it != in.end()) o.perm = it->second;
      orders[g].restore(o);
      epoch_loss[g] = get_d(in, q + "epoch_loss");
      last_loss[g] = get_d(in, q + "last_loss");
    }
    epoch_steps = get_i(in, pre + "epoch_steps");
  }
};

class Engine {
 public:
  Engine(const Config& cfg, const Dataset& data, const Hooks& hooks, const CheckpointOptions& ck)
      : cfg_(cfg), hooks_(hooks), ck_(ck), device_(cfg.device) {
    data_ = dataset_to(data, device_);
    Augment aug;
    if (cfg.augment) aug = Augment{cfg.crop_padding, cfg.flip};
    TORCH_CHECK_VALUE(!cfg.augment || data_.x_train.dim() == 4,
                      "config.augment needs image inputs [N, C, H, W], got shape ",
                      data_.x_train.sizes());
    inputs_ = std::make_unique<InputPipeline>(data_, aug);
    plan_.steps_per_epoch = data_.x_train.size(0) / cfg.batch_size;  // last partial batch dropped
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
    if (!ck_.dir.empty()) {
      TORCH_CHECK_VALUE(ck_.every_epochs >= 0, "checkpoint_every must be >= 0");
      ckpt_path_ = ck_.dir + "/checkpoint.swamp";
      ::mkdir(ck_.dir.c_str(), 0755);
      struct stat st;
      TORCH_CHECK_VALUE(::stat(ck_.dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode),
                        "checkpoint folder ", ck_.dir, " cannot be created");
      const std::string probe = ck_.dir + "/.swamp-write-test";
      FILE* f = std::fopen(probe.c_str(), "w");
      TORCH_CHECK_VALUE(f != nullptr, "checkpoint folder ", ck_.dir, " is not writable");
      std::fclose(f);
      std::remove(probe.c_str());
      fingerprint_ = data_fingerprint();  // only checkpoints need it
    }
  }

  RunResult run() {
    ModelSpec spec{data_.input_shape(), data_.num_classes};
    const uint64_t init_seed = hash_seed(cfg_.seed, -2, 0, 1);
    ticket_ = create_model(cfg_.model, spec, init_seed);
    ticket_->to(device_);
    int64_t max_particles = 1;
    for (int64_t r = 0; r < cfg_.rounds; ++r)
      max_particles = std::max(max_particles, particles_in_round(cfg_, r));
    for (int64_t p = 0; p < max_particles; ++p) {
      particles_.push_back(create_model(cfg_.model, spec, init_seed));
      particles_.back()->to(device_);
    }
    final_ = create_model(cfg_.model, spec, init_seed);
    final_->to(device_);

    prunable_ = prunable_parameter_names(*ticket_);
    TORCH_CHECK_VALUE(!prunable_.empty(), "model '", cfg_.model, "' has no prunable weights");
    eligible_ = prunable_;
    if (cfg_.keep_first_last_dense) {
      TORCH_CHECK_VALUE(prunable_.size() > 2, "config.keep_first_last_dense: model '", cfg_.model,
                        "' has only ", prunable_.size(), " prunable layers");
      eligible_ = std::vector<std::string>(prunable_.begin() + 1, prunable_.end() - 1);
    }
    auto named = ticket_->named_parameters(true);
    for (const auto& n : eligible_)
      masks_[n] = at::ones_like(named[n], named[n].options().dtype(at::kBool));

    std::unique_ptr<ParticleState> resume_group;
    Group resume_models;
    if (!ckpt_path_.empty() && file_exists(ckpt_path_)) {
      if (ck_.fresh) {
        std::remove(ckpt_path_.c_str());
      } else {
        resume_group = restore(resume_models);
        if (hooks_.on_restore && !results_.empty()) hooks_.on_restore(results_);
      }
    }

    if (!ticket_done_) {
      Group tg = single_group(*ticket_);
      ParticleState t = new_group(tg, -1, 0);
      train(tg, t, -1, 0, plan_.rewind_step, false, /*checkpoints=*/false);
      ticket_done_ = true;
      save_checkpoint(nullptr);
    }

    for (int64_t round = rounds_done_; round < cfg_.rounds; ++round) {
      round_t0_ = Clock::now();
      if (masks_round_ < round) {  // a finished run extended with more rounds
        prune();
        masks_round_ = round;
      }
      const int64_t n = particles_in_round(cfg_, round);
      // The particles still to train, as one stacked group or one at a time (a resumed group
      // keeps the way it was started).
      while (particles_done_ < n) {
        const int64_t first = particles_done_;
        Group grp;
        std::unique_ptr<ParticleState> st;
        if (resume_group) {
          grp = std::move(resume_models);
          st = std::move(resume_group);
        } else {
          grp = group_for(n, first);
          for (Model* m : grp.models) {
            rewind(*m, grp.per_model);
            enter_sparse(*m);
          }
          st = std::make_unique<ParticleState>(new_group(grp, round, first));
          st->step = plan_.rewind_step;
        }
        train(grp, *st, round, first, plan_.total_steps, plan_.swa, /*checkpoints=*/true);
        const int64_t group = grp.particles();
        for (size_t k = 0; k < grp.models.size(); ++k) {
          if (plan_.swa) load_parameters(*grp.models[k], st->swa.value(), grp.first[k]);
          layers::disable_sparse(*grp.models[k]);
        }
        for (int64_t g = 0; g < group; ++g) {
          if (grp.per_model > 1)
            copy_particle_out(*grp.models[g / grp.per_model], grp.per_model, g % grp.per_model,
                              *particles_[first + g]);
          losses_.push_back(st->last_loss[g]);
        }
        if (plan_.swa) {  // the SWA solutions' batch-norm statistics, side by side on threads
          const int64_t lanes = post_lanes(n);
          run_lanes(lanes, [&](int64_t lane) {
            for (int64_t g = lane; g < group; g += lanes) recompute_bn(*particles_[first + g]);
          });
        }
        particles_done_ = first + group;
        save_checkpoint(nullptr);
      }

      // Average the particles (uniformly), then fix batch-norm statistics for the average.
      RoundResult rr;
      rr.round = round;
      rr.particles = n;
      std::vector<at::Tensor> particle_logp(static_cast<size_t>(n));
      std::vector<std::vector<at::Tensor>> particle_params;
      double loss_sum = 0.0;
      const int64_t lanes = post_lanes(n);
      run_lanes(lanes, [&](int64_t lane) {
        for (int64_t p = lane; p < n; p += lanes) particle_logp[p] = log_probs(*particles_[p]);
      });
      for (int64_t p = 0; p < n; ++p) {
        const at::Tensor& logp = particle_logp[p];
        const Metrics m = metrics(logp);
        rr.particle_acc.push_back(m.acc);
        rr.particle_nll.push_back(m.nll);
        particle_params.push_back(particles_[p]->parameters(true));
        loss_sum += losses_[p];
      }
      rr.train_loss = loss_sum / static_cast<double>(n);
      copy_state(*particles_[0], *final_);
      std::vector<at::Tensor> out = final_->parameters(true);
      averager_->average(particle_params, out, n);
      if (n > 1 || plan_.swa) recompute_bn(*final_);
      apply_masks(*final_);
      const Metrics fm = metrics(log_probs(*final_));
      rr.test_acc = fm.acc;
      rr.test_nll = fm.nll;
      const Metrics em = ensemble_metrics(particle_logp);
      rr.ensemble_acc = em.acc;
      rr.ensemble_nll = em.nll;
      fill_sparsity(rr);
      rr.seconds = round_seconds_ + std::chrono::duration<double>(Clock::now() - round_t0_).count();
      round_seconds_ = 0.0;
      round_t0_ = Clock::now();
      results_.push_back(rr);
      rounds_done_ = round + 1;
      particles_done_ = 0;
      losses_.clear();
      if (round + 1 < cfg_.rounds) {
        prune();
        masks_round_ = round + 1;
      }
      save_checkpoint(nullptr);
      if (hooks_.on_round) hooks_.on_round(rr);
    }

    RunResult result;
    result.config = cfg_;
    result.rounds = results_;
    // A run restored from a finished checkpoint (or cut to fewer rounds) returns what it has.
    if (static_cast<int64_t>(result.rounds.size()) > cfg_.rounds) result.rounds.resize(cfg_.rounds);
    for (const auto& kv : masks_) result.masks[kv.first] = kv.second.cpu();
    for (const auto& item : final_->named_parameters(true))
      result.state[item.key()] = item.value().detach().cpu();
    for (const auto& item : final_->named_buffers(true))
      result.state[item.key()] = item.value().detach().cpu();
    return result;
  }

 private:
  // ---- checkpoints ----------------------------------------------------------------------------
  std::string data_fingerprint() const {
    std::ostringstream o;
    o << data_.x_train.sizes() << data_.x_test.sizes() << " classes " << data_.num_classes;
    for (size_t c = 0; c < data_.mean.size(); ++c)
      o << " norm " << fmt_double(data_.mean[c]) << "/" << fmt_double(data_.std[c]);
    // Sums in float64, a few thousand samples at a time (no full-size copy of the data).
    for (const at::Tensor* t : {&data_.x_train, &data_.y_train, &data_.x_test, &data_.y_test}) {
      double sum = 0.0, abs_sum = 0.0, weighted = 0.0;
      for (int64_t s = 0; s < t->size(0); s += 4096) {
        const at::Tensor c =
            t->narrow(0, s, std::min<int64_t>(4096, t->size(0) - s)).to(at::kDouble);
        sum += c.sum().item<double>();
        abs_sum += c.abs().sum().item<double>();
        // per-sample sums weighted by position: a reordered dataset differs too
        const at::Tensor per_sample = c.dim() > 1 ? c.flatten(1).sum(1) : c;
        weighted +=
            per_sample.dot(at::arange(s + 1, s + 1 + c.size(0), c.options())).item<double>();
      }
      o << " " << fmt_double(sum) << " " << fmt_double(abs_sum) << " " << fmt_double(weighted);
    }
    return o.str();
  }

  // Writes everything needed to continue; `cur` is the group being trained (in `cur_models`), if
  // any.
  void save_checkpoint(const ParticleState* cur, const Group* cur_models = nullptr) {
    if (ckpt_path_.empty()) return;
    TensorMap m;
    m["meta/format"] = string_tensor("swamp_ext-checkpoint-2");
    m["meta/config"] = string_tensor(encode_config(cfg_));
    m["meta/data"] = string_tensor(fingerprint_);
    m["meta/ticket_done"] = scalar_i(ticket_done_);
    m["meta/rounds_done"] = scalar_i(rounds_done_);
    m["meta/masks_round"] = scalar_i(masks_round_);
    m["meta/particles_done"] = scalar_i(particles_done_);
    m["meta/round_seconds"] =
        scalar_d(round_seconds_ + std::chrono::duration<double>(Clock::now() - round_t0_).count());
    if (ticket_done_) save_module(m, "ticket/", *ticket_);
    for (const auto& kv : masks_) m["mask/" + kv.first] = kv.second;
    if (rounds_done_ > 0) save_module(m, "final/", *final_);
    for (size_t i = 0; i < results_.size(); ++i)
      m["result/" + std::to_string(i)] = string_tensor(encode_round(results_[i]));
    for (int64_t p = 0; p < particles_done_; ++p) {
      save_module(m, "done/" + std::to_string(p) + "/", *particles_[p]);
      m["done/" + std::to_string(p) + "/loss"] = scalar_d(losses_[p]);
    }
    if (cur != nullptr) {
      m["cur/active"] = scalar_i(1);
      cur->save(m, "cur/");
      const size_t k = cur_models->models.size();
      m["cur/models"] = scalar_i(static_cast<int64_t>(k));
      for (size_t i = 0; i < k; ++i) {
        layers::sync_sparse(*cur_models->models[i]);
        save_module(m, k == 1 ? "cur/model/" : "cur/model/" + std::to_string(i) + "/",
                    *cur_models->models[i]);
      }
    }
    save_tensors_atomic(ckpt_path_, m);
  }

  std::unique_ptr<ParticleState> restore(Group& grp) {
    const TensorMap m = load_tensors_verified(ckpt_path_);
    TORCH_CHECK(
        m.count("meta/format") && tensor_string(m.at("meta/format")) == "swamp_ext-checkpoint-2",
        "checkpoint ", ckpt_path_,
        " has an unknown format (made by another version of swamp_ext?); resume it with that "
        "version, or start over with fresh=True (--fresh)");
    // Same configuration (only `rounds` may change) and same data, or refuse.
    std::map<std::string, std::string> saved;
    {
      std::istringstream in(tensor_string(get_t(m, "meta/config")));
      std::string line;
      while (std::getline(in, line)) {
        const auto eq = line.find('=');
        if (eq != std::string::npos) saved[line.substr(0, eq)] = line.substr(eq + 1);
      }
    }
    std::string diffs;
    for (const auto& kv : config_fields(cfg_)) {
      if (kv.first == "rounds") continue;
      auto it = saved.find(kv.first);
      const std::string was = it == saved.end() ? "<missing>" : it->second;
      if (was != kv.second)
        diffs += "\n  " + kv.first + ": checkpoint " + was + ", now " + kv.second;
    }
    TORCH_CHECK_VALUE(diffs.empty(), "the checkpoint in ", ck_.dir,
                      " was made with a different configuration:", diffs,
                      "\nUse the same configuration to resume, another folder, or fresh=True "
                      "(--fresh) to start over");
    TORCH_CHECK_VALUE(tensor_string(get_t(m, "meta/data")) == fingerprint_, "the checkpoint in ",
                      ck_.dir,
                      " was made with different data; use the same dataset to resume, "
                      "another folder, or fresh=True (--fresh) to start over");

    ticket_done_ = get_i(m, "meta/ticket_done") != 0;
    rounds_done_ = get_i(m, "meta/rounds_done");
    masks_round_ = get_i(m, "meta/masks_round");
    particles_done_ = get_i(m, "meta/particles_done");
    round_seconds_ = get_d(m, "meta/round_seconds");
    TORCH_CHECK_VALUE(rounds_done_ <= cfg_.rounds && masks_round_ < cfg_.rounds,
                      "the checkpoint in ", ck_.dir, " has gone on to round ", masks_round_,
                      ": ask for at least ", masks_round_ + 1,
                      " rounds to resume it (rounds=", cfg_.rounds, ")");
    if (ticket_done_) load_module(m, "ticket/", *ticket_);
    for (auto& kv : masks_) kv.second.copy_(get_t(m, "mask/" + kv.first));
    if (rounds_done_ > 0) load_module(m, "final/", *final_);
    for (int64_t i = 0; i < rounds_done_; ++i)
      results_.push_back(decode_round(tensor_string(get_t(m, "result/" + std::to_string(i)))));
    for (int64_t p = 0; p < particles_done_; ++p) {
      load_module(m, "done/" + std::to_string(p) + "/", *particles_[p]);
      losses_.push_back(get_d(m, "done/" + std::to_string(p) + "/loss"));
    }
    if (m.count("cur/active")) {
      // The group goes on the way it was started: stacked, one model per particle, or single.
      const int64_t group = get_i(m, "cur/group");
      const int64_t k = m.count("cur/models") ? get_i(m, "cur/models") : 1;
      const int64_t per_model = k > 1 ? group / k : group;
      TORCH_CHECK(k >= 1 && per_model * k == group, "checkpoint: ", k, " models for ", group,
                  " particles");
      grp = k > 1       ? threads_group(particles_done_, group, per_model)
            : group > 1 ? single_group(stacked_model(group), group)
                        : single_group(*particles_[particles_done_]);
      for (size_t i = 0; i < grp.models.size(); ++i) {
        load_module(m, k == 1 ? "cur/model/" : "cur/model/" + std::to_string(i) + "/",
                    *grp.models[i]);
        enter_sparse(*grp.models[i]);
      }
      auto st = std::make_unique<ParticleState>(new_group(grp, rounds_done_, particles_done_));
      st->load(m, "cur/", device_);
      return st;
    }
    return nullptr;
  }

  // ---- the steps of the algorithm ---------------------------------------------------------------
  // The particles of a round of n from `first` on: all stacked in one model, one model each side
  // by side in threads, or (sequential) only the first of them, alone. The path is the round's:
  // the config's choice, or (auto) the one measured to be faster for n particles; see
  // particle_path().
  Group group_for(int64_t n, int64_t first) {
    const ParticlePath path = particle_path(cfg_, *particles_.at(0), n);
    const int64_t count = n - first;
    if (count == 1) return single_group(*particles_[first]);
    if (path == ParticlePath::kStacked) return single_group(stacked_model(count), count);
    if (path == ParticlePath::kThreads)
      return threads_group(first, count, lane_stack(*particles_.at(0), count));
    return single_group(*particles_[first]);
  }
  // Lanes for the per-particle work after training (batch-norm statistics, evaluation) in a
  // round of n particles: those of the threads path, else 1 (each particle with every thread).
  int64_t post_lanes(int64_t n) const {
    return n > 1 && particle_path(cfg_, *particles_.at(0), n) == ParticlePath::kThreads
               ? particle_lanes(n)
               : 1;
  }
  static Group single_group(Model& model, int64_t particles = 1) {
    Group g;
    g.models = {&model};
    g.per_model = particles;
    return g;
  }
  // `count` particles side by side: `per_model` stacked in each model (the particles' own models
  // when 1), the models spread over the lanes.
  Group threads_group(int64_t first, int64_t count, int64_t per_model) {
    Group g;
    g.per_model = per_model;
    for (int64_t i = 0; i < count / per_model; ++i)
      g.models.push_back(per_model == 1 ? particles_.at(first + i).get()
                                        : &stacked_model(per_model, i));
    g.lanes = particle_lanes(static_cast<int64_t>(g.models.size()));
    return g;
  }

  // Stacked model number `index` of `group` particles (several when lanes each stack theirs).
  Model& stacked_model(int64_t group, int64_t index = 0) {
    auto it = stacked_.find({group, index});
    if (it == stacked_.end()) {
      ModelSpec spec{data_.input_shape(), data_.num_classes, group};
      ModelPtr m = create_model(cfg_.model, spec, 0);
      m->to(device_);
      it = stacked_.emplace(std::make_pair(group, index), m).first;
    }
    return *it->second;
  }

  // The tensors the optimizer, SWA and averaging work on (the values of sparse layers instead
  // of their weights) and their masks; see swamp/layers.h.
  std::vector<at::Tensor> trainable(Model& model) { return layers::trainable_tensors(model); }
  std::vector<at::Tensor> masks_for(Model& model, int64_t group) {
    return layers::trainable_masks(model, masks_, group);
  }

  // Linear layers whose mask is at or below the density threshold train with sparse kernels
  // (CPU only).
  void enter_sparse(Model& model) {
    if (device_.is_cpu())
      layers::enable_sparse(model, masks_, cfg_.sparse_kernels, cfg_.sparse_density);
  }

  void apply_masks(Model& model) {
    torch::NoGradGuard no_grad;
    auto named = model.named_parameters(true);
    for (const auto& kv : masks_) named[kv.first].mul_(kv.second);
  }

  // The ticket under the current masks, into every particle of `model`.
  void rewind(Model& model, int64_t group) {
    if (group == 1) {
      copy_state(*ticket_, model);
      apply_masks(model);
      return;
    }
    torch::NoGradGuard no_grad;
    Model& single = *particles_[0];  // scratch: overwritten when the group is copied out
    copy_state(*ticket_, single);
    apply_masks(single);
    auto sp = single.named_parameters(true), sb = single.named_buffers(true);
    for (auto& item : model.named_parameters(true))
      broadcast_into(item.value(), sp[item.key()], group);
    for (auto& item : model.named_buffers(true))
      broadcast_into(item.value(), sb[item.key()], group);
  }
  static void broadcast_into(at::Tensor& stacked, const at::Tensor& single, int64_t group) {
    if (stacked.dim() == 0) {
      stacked.copy_(single);
      return;
    }
    std::vector<int64_t> shape(single.sizes().begin(), single.sizes().end());
    shape.insert(shape.begin(), group);
    stacked.view(shape).copy_(single.unsqueeze(0).expand(shape));
  }
  // Particle g of a stacked model into a single-particle model.
  static void copy_particle_out(Model& stacked, int64_t group, int64_t g, Model& single) {
    torch::NoGradGuard no_grad;
    auto sp = stacked.named_parameters(true), sb = stacked.named_buffers(true);
    for (auto& item : single.named_parameters(true))
      item.value().copy_(layers::particle_slice(sp[item.key()], group, g));
    for (auto& item : single.named_buffers(true))
      item.value().copy_(layers::particle_slice(sb[item.key()], group, g));
  }

  // values[offset...]: the model's trainable tensors.
  void load_parameters(Model& model, const std::vector<at::Tensor>& values, size_t offset = 0) {
    torch::NoGradGuard no_grad;
    auto params = trainable(model);
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(values.at(offset + i));
  }
  std::vector<at::Tensor> trainable(const Group& grp) {
    std::vector<at::Tensor> all;
    for (Model* m : grp.models)
      for (auto& t : trainable(*m)) all.push_back(t);
    return all;
  }

  void prune() {
    auto named = final_->named_parameters(true);
    std::vector<at::Tensor> w, m;
    for (const auto& n : eligible_) {
      w.push_back(named[n].detach());
      m.push_back(masks_[n]);
    }
    global_magnitude_prune_(w, m, cfg_.prune_ratio);
  }

  // Training state for the particles of `grp` (first: index of the first) in `round`.
  // Sets grp.first (the models' tensor ranges in the optimizer's list: sparse layers already
  // entered).
  ParticleState new_group(Group& grp, int64_t round, int64_t first) {
    const int64_t group = grp.particles();
    std::vector<at::Tensor> masks;
    grp.first.clear();
    for (Model* m : grp.models) {
      grp.first.push_back(masks.size());
      for (auto& t : masks_for(*m, grp.per_model)) masks.push_back(t);
    }
    grp.first.push_back(masks.size());
    ParticleState st{0,
                     MaskedSGD(trainable(grp), std::move(masks),
                               SgdOptions{cfg_.momentum, cfg_.nesterov, cfg_.weight_decay}),
                     {},
                     RunningAverage(),
                     std::vector<double>(static_cast<size_t>(group), 0.0),
                     0,
                     std::vector<double>(static_cast<size_t>(group), 0.0)};
    for (int64_t g = 0; g < group; ++g)
      st.orders.emplace_back(data_.x_train.size(0), hash_seed(cfg_.seed, round, first + g));
    return st;
  }

  // The loss of batch b of the G particles [g0, g0 + G) of the group, held by `model`: one value
  // per particle (their sum is what is minimised: the particles do not interact, so each gets
  // exactly its own gradient).
  at::Tensor batch_loss(Model& model, ParticleState& st, int64_t g0, int64_t G, int64_t b,
                        const std::vector<at::Tensor>& perms) {
    const int64_t B = cfg_.batch_size;
    if (G == 1) {
      const at::Tensor idx = perms[g0].narrow(0, b * B, B);
      const at::Tensor x =
          (*inputs_)(data_.x_train.index_select(0, idx), &st.orders[g0].generator());
      const at::Tensor y = data_.y_train.index_select(0, idx);
      return at::cross_entropy_loss(model.forward(x), y).reshape({1});
    }
    std::vector<at::Tensor> xs, ys;
    for (int64_t g = g0; g < g0 + G; ++g) {
      const at::Tensor idx = perms[g].narrow(0, b * B, B);
      xs.push_back((*inputs_)(data_.x_train.index_select(0, idx), &st.orders[g].generator()));
      ys.push_back(data_.y_train.index_select(0, idx));
    }
    const at::Tensor logits =
        layers::split_outputs(model.forward(layers::stack_inputs(at::stack(xs))), G);
    const at::Tensor ce = at::cross_entropy_loss(logits.reshape({G * B, -1}), at::cat(ys),
                                                 /*weight=*/{}, at::Reduction::None);
    return ce.view({G, B}).mean(1);
  }

  // One SGD step of every particle of the group on batch b; returns the losses (one per
  // particle). On the threads path every lane steps its models with its own thread; a single
  // model is one lane, run by the calling thread with the whole intra-op pool.
  at::Tensor step_group(const Group& grp, ParticleState& st, int64_t b,
                        const std::vector<at::Tensor>& perms, double lr) {
    const auto K = static_cast<int64_t>(grp.models.size());
    std::vector<at::Tensor> losses(static_cast<size_t>(K));
    run_lanes(grp.lanes, [&](int64_t lane) {
      for (int64_t k = lane; k < K; k += grp.lanes) {
        const size_t t0 = grp.first[k], t1 = grp.first[k + 1];
        st.opt.zero_grad(t0, t1);
        const at::Tensor loss =
            batch_loss(*grp.models[k], st, k * grp.per_model, grp.per_model, b, perms);
        loss.sum().backward();
        st.opt.step(lr, t0, t1);
        losses[k] = loss.detach();
      }
    });
    return K == 1 ? losses[0] : at::cat(losses);
  }

  // Trains the group from st.step to `end`.
  void train(const Group& grp, ParticleState& st, int64_t round, int64_t first, int64_t end,
             bool swa, bool checkpoints) {
    for (Model* m : grp.models) m->train(true);
    ScheduleOptions sched;
    sched.kind = cfg_.schedule;
    sched.lr = cfg_.lr;
    sched.total_steps = plan_.total_steps;
    sched.warmup_steps = static_cast<int64_t>(
        std::llround(cfg_.warmup_epochs * static_cast<double>(plan_.steps_per_epoch)));
    sched.swa_start_step = plan_.swa ? plan_.swa_start_epoch * plan_.steps_per_epoch : -1;
    sched.swa_lr = cfg_.swa_lr;
    const int64_t spe = plan_.steps_per_epoch;
    const int64_t particles = particles_in_round(cfg_, std::max<int64_t>(round, 0));
    const int64_t G = st.size();
    int64_t epochs_since_checkpoint = 0;
    // The CPU reads the loss every step; a GPU reads it in groups and at epoch ends, so that the
    // host does not wait for the device on every step. Divergence names the exact step either way.
    // SWAMP_LOSS_SYNC_EVERY overrides the group size (tests use it to run the GPU logic on a CPU).
    size_t sync_every = device_.is_cpu() ? 1 : 32;
    if (const char* env = std::getenv("SWAMP_LOSS_SYNC_EVERY"))
      sync_every = static_cast<size_t>(std::max(1L, std::strtol(env, nullptr, 10)));
    std::vector<std::pair<int64_t, at::Tensor>> pending;
    auto add_losses = [&](const double* v, int64_t step) {
      for (int64_t g = 0; g < G; ++g) {
        check_finite(v[g], round, first + g, step);
        st.epoch_loss[g] += v[g];
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
        for (int64_t g = 0; g < G; ++g) perms[g] = st.orders[g].epoch(epoch).to(device_);
        perm_epoch = epoch;
      }
      const double lr = learning_rate(sched, step);
      const at::Tensor losses = step_group(grp, st, b, perms, lr);
      if (sync_every == 1) {
        const at::Tensor v = losses.to(at::kDouble).contiguous();
        add_losses(v.const_data_ptr<double>(), step);
      } else {
        pending.emplace_back(step, losses);
      }
      ++st.epoch_steps;
      ++st.step;
      if (pending.size() >= sync_every) flush();
      bool epoch_end = false;
      if (b == spe - 1 || st.step == end) {
        flush();
        for (int64_t g = 0; g < G; ++g)
          st.last_loss[g] = st.epoch_loss[g] / static_cast<double>(st.epoch_steps);
        if (b == spe - 1 && swa && epoch >= plan_.swa_start_epoch) st.swa.update(trainable(grp));
        if (hooks_.on_epoch)
          for (int64_t g = 0; g < G; ++g)
            hooks_.on_epoch(
                Progress{round, first + g, particles, epoch + 1, cfg_.epochs, st.last_loss[g], lr});
        std::fill(st.epoch_loss.begin(), st.epoch_loss.end(), 0.0);
        st.epoch_steps = 0;
        epoch_end = b == spe - 1;
      }
      if (checkpoints && epoch_end && st.step < end && ck_.every_epochs > 0 &&
          ++epochs_since_checkpoint >= ck_.every_epochs) {
        save_checkpoint(&st, &grp);
        epochs_since_checkpoint = 0;
      }
      if (hooks_.check_interrupt) {
        try {
          hooks_.check_interrupt();
        } catch (...) {
          if (checkpoints) {  // stop cleanly: nothing done is lost
            flush();
            save_checkpoint(&st, &grp);
          }
          throw;
        }
      }
    }
  }

  static void check_finite(double loss, int64_t round, int64_t particle, int64_t step) {
    TORCH_CHECK(std::isfinite(loss), "training diverged: the loss is ", loss, " in round ", round,
                round < 0 ? " (ticket)" : "", ", particle ", particle, ", step ", step,
                "; lower the learning rate");
  }

  void recompute_bn(Model& model) {
    const int64_t B = cfg_.bn_batch_size > 0 ? cfg_.bn_batch_size : cfg_.batch_size;
    const int64_t n = data_.x_train.size(0);
    recompute_batchnorm(model, [&] {
      for (int64_t s = 0; s + B <= n || s == 0; s += B) {
        const int64_t len = std::min(B, n - s);
        model.forward((*inputs_)(data_.x_train.narrow(0, s, len)));
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
      parts.push_back(
          at::log_softmax(model.forward((*inputs_)(data_.x_test.narrow(0, s, len))), 1));
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

  void fill_sparsity(RoundResult& rr) {
    auto named = final_->named_parameters(true);
    int64_t all = 0, all_kept = 0;
    for (const auto& n : prunable_) {
      const int64_t numel = named[n].numel();
      auto it = masks_.find(n);
      const int64_t kept = it == masks_.end() ? numel : it->second.sum().item<int64_t>();
      all += numel;
      all_kept += kept;
      if (it != masks_.end()) {
        rr.prunable += numel;
        rr.remaining += kept;
      }
      rr.layer_density.emplace_back(n, static_cast<double>(kept) / static_cast<double>(numel));
    }
    rr.sparsity = 1.0 - static_cast<double>(rr.remaining) / static_cast<double>(rr.prunable);
    rr.sparsity_all = 1.0 - static_cast<double>(all_kept) / static_cast<double>(all);
  }

 private:
  const Config& cfg_;
  const Hooks& hooks_;
  const CheckpointOptions& ck_;
  c10::Device device_;
  Dataset data_;
  std::unique_ptr<InputPipeline> inputs_;
  Plan plan_;
  std::shared_ptr<ParticleAverager> averager_;
  std::string ckpt_path_;
  std::string fingerprint_;

  ModelPtr ticket_, final_;
  std::vector<ModelPtr> particles_;
  // stacked models by (group size, index), made when first needed
  std::map<std::pair<int64_t, int64_t>, ModelPtr> stacked_;
  std::vector<std::string> prunable_, eligible_;
  std::map<std::string, at::Tensor> masks_;

  // Progress (what a checkpoint records).
  bool ticket_done_ = false;
  int64_t rounds_done_ = 0;
  int64_t masks_round_ = 0;     // the round the current masks are for
  int64_t particles_done_ = 0;  // in round rounds_done_
  std::vector<double> losses_;  // last-epoch losses of the finished particles of the round
  std::vector<RoundResult> results_;
  double round_seconds_ = 0.0;  // time spent in the current round before a resume
  Clock::time_point round_t0_ = Clock::now();
};

}  // namespace

RunResult run_imp(const Config& cfg, const Dataset& data, const Hooks& hooks,
                  const CheckpointOptions& checkpoint) {
  validate_config(cfg);
  const c10::Device dev(cfg.device);
  TORCH_CHECK_VALUE(!dev.is_cuda() || at::hasCUDA(), "config.device is '", cfg.device,
                    "' but this torch build has no usable CUDA device");
  validate_dataset(data, cfg.batch_size);
  // Deterministic algorithms for this run only; the global settings come back afterwards.
  struct DeterminismGuard {
    at::Context& ctx = at::globalContext();
    bool algos = ctx.deterministicAlgorithms(), warn = ctx.deterministicAlgorithmsWarnOnly();
    bool cudnn = ctx.deterministicCuDNN(), bench = ctx.benchmarkCuDNN();
    explicit DeterminismGuard(bool on) {
      if (!on) return;
      ctx.setDeterministicAlgorithms(true, false);
      ctx.setDeterministicCuDNN(true);
      ctx.setBenchmarkCuDNN(false);
    }
    ~DeterminismGuard() {
      ctx.setDeterministicAlgorithms(algos, warn);
      ctx.setDeterministicCuDNN(cudnn);
      ctx.setBenchmarkCuDNN(bench);
    }
  } determinism(cfg.deterministic);
  Engine engine(cfg, data, hooks, checkpoint);
  return engine.run();
}

}  // namespace swamp
