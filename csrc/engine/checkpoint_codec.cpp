#include "checkpoint_codec.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "../common/exact_text.h"
#include "../io/files.h"
#include "run_identity.h"
#include "swamp/layers.h"
#include "swamp/pruning.h"

namespace swamp::engine {
namespace {

constexpr const char* kFormat = "swamp_ext-checkpoint-3";

void check_pruned_zero(Entries& e, const std::string& prefix, torch::nn::Module& m,
                       const Masks& masks) {
  auto named = m.named_parameters(true);
  for (const auto& kv : masks.map())
    if (const at::Tensor* t = named.find(kv.first); t && nonzero_outside(*t, kv.second))
      e.damaged(prefix + kv.first, "has nonzero weights where the mask has pruned them");
}

std::string model_key(size_t k, size_t i) {
  return k == 1 ? "cur/model/" : "cur/model/" + std::to_string(i) + "/";
}

}  // namespace

RunCheckpoint::RunCheckpoint(const CheckpointOptions& options, const Config& cfg, const Plan& plan,
                             std::string model_identity, const BatchSource& data)
    : options_(options),
      cfg_(cfg),
      plan_(plan),
      train_size_(data.train_size()),
      identity_(std::move(model_identity)) {
  if (options_.dir.empty()) return;
  TORCH_CHECK_VALUE(options_.every_epochs >= 0, "checkpoint_every must be >= 0");
  TORCH_CHECK_VALUE(options_.every_steps >= 0, "checkpoint_every_steps must be >= 0");
  ensure_writable_dir(options_.dir, "checkpoint folder");
  path_ = options_.dir + "/checkpoint.swamp";
  fingerprint_ = data.fingerprint();  // only checkpoints need it
}

bool RunCheckpoint::resumable() {
  if (path_.empty() || !file_exists(path_)) return false;
  if (!options_.fresh) return true;
  std::remove(path_.c_str());
  return false;
}

void RunCheckpoint::save(const RunProgress& p, ParticleModels& models, const Masks& masks,
                         double round_seconds, const ParticleState* cur, const Group* grp) const {
  if (path_.empty()) return;
  TensorMap m;
  m["meta/format"] = string_tensor(kFormat);
  m["meta/config"] = string_tensor(encode_config(cfg_));
  m["meta/model"] = string_tensor(identity_);
  m["meta/architecture"] = string_tensor(architecture(models.ticket()));
  m["meta/data"] = string_tensor(fingerprint_);
  m["meta/ticket_done"] = scalar_i(p.ticket_done);
  m["meta/rounds_done"] = scalar_i(p.rounds_done);
  m["meta/masks_round"] = scalar_i(p.masks_round);
  m["meta/particles_done"] = scalar_i(p.particles_done);
  m["meta/round_seconds"] = scalar_d(round_seconds);
  // where a particle's training stands, for readers of the folder (swamp-ext show)
  m["meta/steps_per_epoch"] = scalar_i(plan_.steps_per_epoch);
  m["meta/total_steps"] = scalar_i(plan_.total_steps);
  if (p.ticket_done) save_module(m, "ticket/", models.ticket());
  masks.save(m, "mask/");
  if (p.rounds_done > 0) save_module(m, "final/", models.average());
  for (size_t i = 0; i < p.results.size(); ++i)
    m["result/" + std::to_string(i)] = string_tensor(encode_round(p.results[i]));
  for (int64_t i = 0; i < p.particles_done; ++i) {
    save_module(m, "done/" + std::to_string(i) + "/", models.particle(i));
    m["done/" + std::to_string(i) + "/loss"] = scalar_d(p.losses[i]);
    if (cfg_.precision == "fp16")
      m["done/" + std::to_string(i) + "/skipped"] = scalar_i(p.skipped.at(i));
  }
  if (cur != nullptr) {
    m["cur/active"] = scalar_i(1);
    save_particle_state(m, "cur/", *cur);
    const size_t k = grp->models.size();
    m["cur/models"] = scalar_i(static_cast<int64_t>(k));
    for (size_t i = 0; i < k; ++i) {
      layers::sync_sparse(*grp->models[i]);
      save_module(m, model_key(k, i), *grp->models[i]);
    }
  }
  save_tensors_atomic(path_, m);
}

ResumedGroup RunCheckpoint::restore(RunProgress& p, ParticleModels& models, Masks& masks,
                                    const std::function<ParticleState(Group&)>& start) const {
  Entries e(path_, load_tensors_verified(path_));
  try {
    return restore_checked(e, p, models, masks, start);
  } catch (const c10::ValueError&) {
    throw;  // a refusal (another configuration, model or data), already explained
  } catch (const c10::Error& err) {
    const std::string what = err.what_without_backtrace();
    if (what.rfind("checkpoint " + path_, 0) == 0) throw;
    TORCH_CHECK(false, "checkpoint ", path_, " could not be resumed: ", what,
                "; delete it, or start over with fresh=True (--fresh)");
  } catch (const std::exception& err) {
    TORCH_CHECK(false, "checkpoint ", path_, " could not be resumed: ", err.what(),
                "; delete it, or start over with fresh=True (--fresh)");
  }
}

ResumedGroup RunCheckpoint::restore_checked(
    Entries& e, RunProgress& p, ParticleModels& models, Masks& masks,
    const std::function<ParticleState(Group&)>& start) const {
  TORCH_CHECK(e.has("meta/format") && tensor_string(e.get("meta/format")) == kFormat, "checkpoint ",
              path_,
              " has an unknown format (made by another version of swamp_ext?); resume it with "
              "that version, or start over with fresh=True (--fresh)");
  // ---- same configuration (only `rounds` may change), model and data, or refuse
  const std::string saved_config = e.text("meta/config");
  const std::string diffs = config_diff(cfg_, saved_config);
  TORCH_CHECK_VALUE(diffs.empty(), "the checkpoint in ", options_.dir,
                    " was made with a different configuration:", diffs,
                    "\nUse the same configuration to resume, another folder, or fresh=True "
                    "(--fresh) to start over");
  const std::string diff =
      architecture_diff(e.text("meta/architecture"), architecture(models.ticket()));
  TORCH_CHECK_VALUE(diff.empty(), "the checkpoint in ", options_.dir,
                    " was made with another architecture: ", diff,
                    "; use the same model to resume, another folder, or fresh=True (--fresh)");
  const std::string model = e.text("meta/model");
  TORCH_CHECK_VALUE(model == identity_, "the checkpoint in ", options_.dir,
                    " was made with another model (", io::printable(model), ", now ", identity_,
                    "); use the same model to resume, another folder, or fresh=True (--fresh)");
  TORCH_CHECK_VALUE(e.text("meta/data") == fingerprint_, "the checkpoint in ", options_.dir,
                    " was made with different data; use the same dataset to resume, "
                    "another folder, or fresh=True (--fresh) to start over");

  // ---- progress: counters within their ranges and consistent with each other
  const int64_t saved_rounds = rounds_of(e, saved_config);
  p.ticket_done = e.integer("meta/ticket_done", 0, 1) != 0;
  p.rounds_done = e.integer("meta/rounds_done", 0, saved_rounds);
  const bool finished = p.rounds_done == saved_rounds;
  // during round r the masks are round r's; a finished run keeps its last round's masks
  const int64_t mr = finished ? p.rounds_done - 1 : p.rounds_done;
  p.masks_round = e.integer("meta/masks_round", mr, mr);
  const int64_t n = finished || !p.ticket_done ? 0 : particles_in_round(cfg_, p.rounds_done);
  p.particles_done = e.integer("meta/particles_done", 0, n);
  if (!p.ticket_done && p.rounds_done > 0) e.damaged("meta/ticket_done", "is 0 after round 1");
  p.round_seconds = e.real("meta/round_seconds", 0.0, HUGE_VAL);
  // informative only (absent from checkpoints of 0.x versions before step checkpoints)
  if (e.has("meta/steps_per_epoch"))
    e.integer("meta/steps_per_epoch", plan_.steps_per_epoch, plan_.steps_per_epoch);
  if (e.has("meta/total_steps"))
    e.integer("meta/total_steps", plan_.total_steps, plan_.total_steps);
  TORCH_CHECK_VALUE(p.rounds_done <= cfg_.rounds && p.masks_round < cfg_.rounds,
                    "the checkpoint in ", options_.dir, " has gone on to round ", p.masks_round,
                    ": ask for at least ", p.masks_round + 1,
                    " rounds to resume it (rounds=", cfg_.rounds, ")");

  // ---- masks: boolean, the model's shapes, as many kept weights as the round records say
  const auto [eligible, kept] = masks.restore(e, "mask/");
  if (p.ticket_done) load_module(e, "ticket/", models.ticket());

  // ---- the round records: exactly one per finished round, consistent with the pruning
  int64_t expect_remaining = eligible;  // round 0 prunes nothing
  for (int64_t i = 0; i < p.rounds_done; ++i) {
    const std::string key = "result/" + std::to_string(i);
    const std::string text = e.text(key);
    RoundResult r;
    try {
      r = decode_round(text);
    } catch (const c10::Error& err) {
      e.damaged(key, err.what_without_backtrace());
    }
    check_round(e, key, r, i, eligible, expect_remaining, masks.prunable());
    p.results.push_back(r);
    expect_remaining = masks.remaining_after(r.remaining, cfg_.prune_ratio, cfg_.pruning, i + 1);
  }
  const int64_t expect_kept = finished ? p.results.back().remaining : expect_remaining;
  if (expect_kept >= 0 && kept != expect_kept)
    e.damaged("mask", "keeps " + std::to_string(kept) + " weights where the round records give " +
                          std::to_string(expect_kept));

  // ---- the last round's average: the masks are what pruning it gave
  if (p.rounds_done > 0) {
    load_module(e, "final/", models.average());
    if (finished) {
      check_pruned_zero(e, "final/", models.average(), masks);
    } else if (!masks.pruned_from(models.average(), cfg_.pruning)) {
      e.damaged("mask",
                "does not keep the largest weights of the last round's average "
                "(it was not pruned from 'final/')");
    }
  }

  // ---- the particles of the round already trained
  for (int64_t i = 0; i < p.particles_done; ++i) {
    const std::string pre = "done/" + std::to_string(i) + "/";
    load_module(e, pre, models.particle(i));
    check_pruned_zero(e, pre, models.particle(i), masks);
    p.losses.push_back(e.real(pre + "loss", -HUGE_VAL, HUGE_VAL));
    p.skipped.push_back(cfg_.precision == "fp16" ? e.integer(pre + "skipped", 0, INT64_MAX) : 0);
  }

  // ---- the group in training, if any: it goes on the way it was started
  ResumedGroup r;
  if (e.has("cur/active")) {
    e.integer("cur/active", 1, 1);
    if (p.particles_done >= n)
      e.damaged("cur/active", "is set but no particle of the round is left to train");
    const int64_t group = e.integer("cur/group", 1, n - p.particles_done);
    const int64_t k = e.integer("cur/models", 1, group);
    if (k > 1 && group % k != 0)
      e.damaged("cur/models",
                "is " + std::to_string(k) + " models for " + std::to_string(group) + " particles");
    r.group = models.resumed_group(p.particles_done, group, k);
    for (size_t i = 0; i < r.group.models.size(); ++i) {
      const std::string pre = model_key(r.group.models.size(), i);
      load_module(e, pre, *r.group.models[i]);
      check_pruned_zero(e, pre, *r.group.models[i], masks);
    }
    r.state = std::make_unique<ParticleState>(start(r.group));
    restore_particle_state(e, "cur/", models.device(), plan_, train_size_, cfg_.momentum, *r.state);
  }
  e.expect_all_used();
  return r;
}

// The saved configuration's round count (the one field allowed to differ).
int64_t RunCheckpoint::rounds_of(Entries& e, const std::string& saved_config) const {
  std::istringstream in(saved_config);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("rounds=", 0) != 0) continue;
    char* end = nullptr;
    const std::string v = line.substr(7);
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (!v.empty() && end == v.c_str() + v.size() && x >= 1 && x <= (int64_t{1} << 32)) return x;
  }
  e.damaged("meta/config", "has no valid rounds=");
}

// A round record against what the run knows: its index, particle count, prunable weights and
// remaining weights (as pruning gives them), figures in their ranges, layers in order.
void RunCheckpoint::check_round(Entries& e, const std::string& key, const RoundResult& r, int64_t i,
                                int64_t eligible, int64_t remaining,
                                const std::vector<std::string>& prunable) const {
  auto bad = [&](const std::string& what) { e.damaged(key, what); };
  if (r.round != i) bad("is the record of round " + std::to_string(r.round));
  if (r.particles != particles_in_round(cfg_, i))
    bad("says " + std::to_string(r.particles) + " particles, the configuration " +
        std::to_string(particles_in_round(cfg_, i)));
  if (r.prunable != eligible)
    bad("counts " + std::to_string(r.prunable) + " prunable weights, the model " +
        std::to_string(eligible));
  if (remaining >= 0 ? r.remaining != remaining : (r.remaining < 0 || r.remaining > eligible))
    bad("says " + std::to_string(r.remaining) + " weights remain where pruning leaves " +
        std::to_string(remaining));
  auto unit = [](double v) { return std::isfinite(v) && v >= 0.0 && v <= 1.0; };
  auto nonneg = [](double v) { return std::isfinite(v) && v >= 0.0; };
  if (r.sparsity != 1.0 - static_cast<double>(r.remaining) / static_cast<double>(r.prunable))
    bad("has a sparsity that does not follow from its weight counts");
  // without diagnostics a round has no particle figures and NaN ensemble figures
  const bool diag = cfg_.diagnostics;
  auto ens = [&](double v, bool is_unit) {
    return diag ? (is_unit ? unit(v) : nonneg(v)) : std::isnan(v);
  };
  if (!unit(r.sparsity_all) || !unit(r.test_acc) || !ens(r.ensemble_acc, true) ||
      !nonneg(r.test_nll) || !ens(r.ensemble_nll, false) || !std::isfinite(r.train_loss) ||
      !nonneg(r.seconds) || !(std::isnan(r.test_ece) || unit(r.test_ece)) ||
      !(std::isnan(r.ensemble_ece) || unit(r.ensemble_ece)))
    bad("has a figure out of its range (accuracy in [0, 1], losses finite)");
  const int64_t figures = diag ? r.particles : 0;
  if (static_cast<int64_t>(r.particle_acc.size()) != figures ||
      static_cast<int64_t>(r.particle_nll.size()) != figures)
    bad(diag ? "does not have one accuracy and loss per particle"
             : "has particle figures in a run without diagnostics");
  for (size_t k = 0; k < r.particle_acc.size(); ++k)
    if (!unit(r.particle_acc[k]) || !nonneg(r.particle_nll[k]))
      bad("has a particle figure out of its range");
  if (r.layer_density.size() != prunable.size()) bad("does not list every prunable layer");
  for (size_t k = 0; k < prunable.size(); ++k)
    if (r.layer_density[k].first != prunable[k] || !unit(r.layer_density[k].second))
      bad("lists layer '" + io::printable(r.layer_density[k].first) + "' with density " +
          exact_text(r.layer_density[k].second) + " where the model's layer " + std::to_string(k) +
          " is '" + prunable[k] + "'");
}

}  // namespace swamp::engine
