#include "checkpoint_codec.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

#include "../common/exact_text.h"
#include "swamp/layers.h"

namespace swamp::engine {
namespace {

constexpr const char* kFormat = "swamp_ext-checkpoint-2";

at::Tensor scalar_i(int64_t v) { return at::full({}, v, at::kLong); }
at::Tensor scalar_d(double v) { return at::full({}, v, at::kDouble); }
const at::Tensor& get_t(const TensorMap& m, const std::string& k) {
  auto it = m.find(k);
  TORCH_CHECK(it != m.end(), "checkpoint is missing '", k, "'");
  return it->second;
}
int64_t get_i(const TensorMap& m, const std::string& k) { return get_t(m, k).item<int64_t>(); }
double get_d(const TensorMap& m, const std::string& k) { return get_t(m, k).item<double>(); }

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

// One line per parameter and buffer: "<name> <shape> <dtype>", in order.
std::string architecture(const torch::nn::Module& m) {
  std::ostringstream out;
  auto line = [&](const char* kind, const std::string& name, const at::Tensor& t) {
    out << kind << " " << name << " " << t.sizes() << " " << t.scalar_type() << "\n";
  };
  for (const auto& item : m.named_parameters(true)) line("parameter", item.key(), item.value());
  for (const auto& item : m.named_buffers(true)) line("buffer", item.key(), item.value());
  return out.str();
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// "" when equal; else the first tensor that differs, in words.
std::string architecture_diff(const std::string& saved, const std::string& now) {
  const auto a = split_lines(saved), b = split_lines(now);
  auto name_of = [](const std::string& l) {
    const auto sp1 = l.find(' '), sp2 = l.find(' ', sp1 + 1);
    return l.substr(0, sp1) + " '" + l.substr(sp1 + 1, sp2 - sp1 - 1) + "'";
  };
  auto what = [](const std::string& l) {
    const auto sp1 = l.find(' '), sp2 = l.find(' ', sp1 + 1);
    return l.substr(sp2 + 1);
  };
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] == b[i]) continue;
    if (name_of(a[i]) != name_of(b[i]))
      return "the checkpoint has " + name_of(a[i]) + " where the model has " + name_of(b[i]);
    return name_of(a[i]) + " is " + what(a[i]) + " in the checkpoint, " + what(b[i]) +
           " in the model";
  }
  if (a.size() > b.size()) return "the checkpoint has " + name_of(a[b.size()]) + ", the model not";
  if (b.size() > a.size()) return "the model has " + name_of(b[a.size()]) + ", the checkpoint not";
  return "";
}

std::string encode_config(const Config& c) {
  std::string s;
  for (const auto& kv : config_fields(c)) s += kv.first + "=" + kv.second + "\n";
  return s;
}

// "" when the saved configuration equals `now` but for `rounds`; else one line per field.
std::string config_diff(const Config& now, const std::string& saved_text) {
  std::map<std::string, std::string> saved;
  std::istringstream in(saved_text);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) saved[line.substr(0, eq)] = line.substr(eq + 1);
  }
  std::string diffs;
  for (const auto& kv : config_fields(now)) {
    if (kv.first == "rounds") continue;
    auto it = saved.find(kv.first);
    const std::string was = it == saved.end() ? "<missing>" : it->second;
    if (was != kv.second) diffs += "\n  " + kv.first + ": checkpoint " + was + ", now " + kv.second;
  }
  return diffs;
}

void save_state(TensorMap& out, const std::string& pre, const ParticleState& st) {
  out[pre + "step"] = scalar_i(st.step);
  out[pre + "group"] = scalar_i(st.size());
  const auto& bufs = st.opt.momentum_buffers();
  out[pre + "momentum_count"] = scalar_i(static_cast<int64_t>(bufs.size()));
  for (size_t i = 0; i < bufs.size(); ++i)
    if (bufs[i].defined()) out[pre + "momentum/" + std::to_string(i)] = bufs[i].detach();
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
}

void load_state(const TensorMap& in, const std::string& pre, const c10::Device& dev,
                ParticleState& st) {
  st.step = get_i(in, pre + "step");
  TORCH_CHECK(get_i(in, pre + "group") == st.size(), "checkpoint: particle group size differs");
  const int64_t nb = get_i(in, pre + "momentum_count");
  std::vector<at::Tensor> bufs(static_cast<size_t>(nb));
  for (int64_t i = 0; i < nb; ++i) {
    auto it = in.find(pre + "momentum/" + std::to_string(i));
    if (it != in.end()) bufs[i] = it->second.to(dev);
  }
  st.opt.set_momentum_buffers(std::move(bufs));
  const int64_t sc = get_i(in, pre + "swa_count");
  std::vector<at::Tensor> avg;
  for (int64_t i = 0; sc > 0; ++i) {
    auto it = in.find(pre + "swa/" + std::to_string(i));
    if (it == in.end()) break;
    avg.push_back(it->second.to(dev));
  }
  st.swa.restore(std::move(avg), sc);
  for (size_t g = 0; g < st.orders.size(); ++g) {
    const std::string q = pre + std::to_string(g) + "/";
    BatchOrder::State o;
    o.generator = get_t(in, q + "order/generator");
    o.current = get_i(in, q + "order/current");
    auto it = in.find(q + "order/perm");
    if (it != in.end()) o.perm = it->second;
    st.orders[g].restore(o);
    st.epoch_loss[g] = get_d(in, q + "epoch_loss");
    st.last_loss[g] = get_d(in, q + "last_loss");
  }
  st.epoch_steps = get_i(in, pre + "epoch_steps");
}

std::string model_key(size_t k, size_t i) {
  return k == 1 ? "cur/model/" : "cur/model/" + std::to_string(i) + "/";
}

}  // namespace

std::string encode_round(const RoundResult& r) {
  std::ostringstream o;
  o << "round=" << r.round << "\nparticles=" << r.particles << "\nremaining=" << r.remaining
    << "\nprunable=" << r.prunable;
  const std::pair<const char*, double> ds[] = {
      {"sparsity", r.sparsity},         {"sparsity_all", r.sparsity_all},
      {"test_acc", r.test_acc},         {"test_nll", r.test_nll},
      {"ensemble_acc", r.ensemble_acc}, {"ensemble_nll", r.ensemble_nll},
      {"train_loss", r.train_loss},     {"seconds", r.seconds}};
  for (const auto& d : ds) o << "\n" << d.first << "=" << exact_text(d.second);
  for (double v : r.particle_acc) o << "\nparticle_acc=" << exact_text(v);
  for (double v : r.particle_nll) o << "\nparticle_nll=" << exact_text(v);
  for (const auto& kv : r.layer_density)
    o << "\nlayer=" << exact_text(kv.second) << " " << kv.first;
  return o.str();
}

RoundResult decode_round(const std::string& s) {
  RoundResult r;
  std::istringstream in(s);
  std::string line;
  const std::map<std::string, int64_t RoundResult::*> ints = {
      {"round", &RoundResult::round},
      {"particles", &RoundResult::particles},
      {"remaining", &RoundResult::remaining},
      {"prunable", &RoundResult::prunable}};
  const std::map<std::string, double RoundResult::*> doubles = {
      {"sparsity", &RoundResult::sparsity},         {"sparsity_all", &RoundResult::sparsity_all},
      {"test_acc", &RoundResult::test_acc},         {"test_nll", &RoundResult::test_nll},
      {"ensemble_acc", &RoundResult::ensemble_acc}, {"ensemble_nll", &RoundResult::ensemble_nll},
      {"train_loss", &RoundResult::train_loss},     {"seconds", &RoundResult::seconds}};
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    const double d = std::strtod(v.c_str(), nullptr);
    if (auto i = ints.find(k); i != ints.end()) {
      r.*(i->second) = std::strtoll(v.c_str(), nullptr, 10);
    } else if (auto f = doubles.find(k); f != doubles.end()) {
      r.*(f->second) = d;
    } else if (k == "particle_acc") {
      r.particle_acc.push_back(d);
    } else if (k == "particle_nll") {
      r.particle_nll.push_back(d);
    } else if (k == "layer") {
      const auto sp = v.find(' ');
      r.layer_density.emplace_back(v.substr(sp + 1), std::strtod(v.substr(0, sp).c_str(), nullptr));
    }
  }
  return r;
}

RunCheckpoint::RunCheckpoint(const CheckpointOptions& options, const Config& cfg,
                             std::string model_identity, const BatchSource& data)
    : options_(options), cfg_(cfg), identity_(std::move(model_identity)) {
  if (options_.dir.empty()) return;
  TORCH_CHECK_VALUE(options_.every_epochs >= 0, "checkpoint_every must be >= 0");
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
  if (p.ticket_done) save_module(m, "ticket/", models.ticket());
  for (const auto& kv : masks.map()) m["mask/" + kv.first] = kv.second;
  if (p.rounds_done > 0) save_module(m, "final/", models.average());
  for (size_t i = 0; i < p.results.size(); ++i)
    m["result/" + std::to_string(i)] = string_tensor(encode_round(p.results[i]));
  for (int64_t i = 0; i < p.particles_done; ++i) {
    save_module(m, "done/" + std::to_string(i) + "/", models.particle(i));
    m["done/" + std::to_string(i) + "/loss"] = scalar_d(p.losses[i]);
  }
  if (cur != nullptr) {
    m["cur/active"] = scalar_i(1);
    save_state(m, "cur/", *cur);
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
  const TensorMap m = load_tensors_verified(path_);
  TORCH_CHECK(m.count("meta/format") && tensor_string(m.at("meta/format")) == kFormat,
              "checkpoint ", path_,
              " has an unknown format (made by another version of swamp_ext?); resume it with "
              "that version, or start over with fresh=True (--fresh)");
  // Same configuration (only `rounds` may change), model and data, or refuse.
  const std::string diffs = config_diff(cfg_, tensor_string(get_t(m, "meta/config")));
  TORCH_CHECK_VALUE(diffs.empty(), "the checkpoint in ", options_.dir,
                    " was made with a different configuration:", diffs,
                    "\nUse the same configuration to resume, another folder, or fresh=True "
                    "(--fresh) to start over");
  if (m.count("meta/architecture")) {
    const std::string diff =
        architecture_diff(tensor_string(m.at("meta/architecture")), architecture(models.ticket()));
    TORCH_CHECK_VALUE(diff.empty(), "the checkpoint in ", options_.dir,
                      " was made with another architecture: ", diff,
                      "; use the same model to resume, another folder, or fresh=True (--fresh)");
  }
  const std::string model =
      m.count("meta/model") ? tensor_string(m.at("meta/model")) : "zoo:" + cfg_.model;
  TORCH_CHECK_VALUE(model == identity_, "the checkpoint in ", options_.dir,
                    " was made with another model (", model, ", now ", identity_,
                    "); use the same model to resume, another folder, or fresh=True (--fresh)");
  TORCH_CHECK_VALUE(tensor_string(get_t(m, "meta/data")) == fingerprint_, "the checkpoint in ",
                    options_.dir,
                    " was made with different data; use the same dataset to resume, "
                    "another folder, or fresh=True (--fresh) to start over");

  p.ticket_done = get_i(m, "meta/ticket_done") != 0;
  p.rounds_done = get_i(m, "meta/rounds_done");
  p.masks_round = get_i(m, "meta/masks_round");
  p.particles_done = get_i(m, "meta/particles_done");
  p.round_seconds = get_d(m, "meta/round_seconds");
  TORCH_CHECK_VALUE(p.rounds_done <= cfg_.rounds && p.masks_round < cfg_.rounds,
                    "the checkpoint in ", options_.dir, " has gone on to round ", p.masks_round,
                    ": ask for at least ", p.masks_round + 1,
                    " rounds to resume it (rounds=", cfg_.rounds, ")");
  if (p.ticket_done) load_module(m, "ticket/", models.ticket());
  for (auto& kv : masks.map()) kv.second.copy_(get_t(m, "mask/" + kv.first));
  if (p.rounds_done > 0) load_module(m, "final/", models.average());
  for (int64_t i = 0; i < p.rounds_done; ++i)
    p.results.push_back(decode_round(tensor_string(get_t(m, "result/" + std::to_string(i)))));
  for (int64_t i = 0; i < p.particles_done; ++i) {
    load_module(m, "done/" + std::to_string(i) + "/", models.particle(i));
    p.losses.push_back(get_d(m, "done/" + std::to_string(i) + "/loss"));
  }
  ResumedGroup r;
  if (!m.count("cur/active")) return r;
  // The group goes on the way it was started: stacked, one model per particle, or single.
  const int64_t group = get_i(m, "cur/group");
  const int64_t k = m.count("cur/models") ? get_i(m, "cur/models") : 1;
  r.group = models.resumed_group(p.particles_done, group, k);
  for (size_t i = 0; i < r.group.models.size(); ++i)
    load_module(m, model_key(r.group.models.size(), i), *r.group.models[i]);
  r.state = std::make_unique<ParticleState>(start(r.group));
  load_state(m, "cur/", models.device(), *r.state);
  return r;
}

}  // namespace swamp::engine
