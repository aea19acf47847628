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
#include "swamp/layers.h"
#include "swamp/pruning.h"

namespace swamp::engine {
namespace {

constexpr const char* kFormat = "swamp_ext-checkpoint-3";

at::Tensor scalar_i(int64_t v) { return at::full({}, v, at::kLong); }
at::Tensor scalar_d(double v) { return at::full({}, v, at::kDouble); }

std::string describe(const at::Tensor& t) {
  std::ostringstream o;
  o << t.scalar_type() << " " << t.sizes();
  return o.str();
}

void save_module(TensorMap& out, const std::string& prefix, const torch::nn::Module& m) {
  for (const auto& item : m.named_parameters(true))
    out[prefix + item.key()] = item.value().detach();
  for (const auto& item : m.named_buffers(true)) out[prefix + item.key()] = item.value().detach();
}

}  // namespace

// ---- reading a checkpoint: every entry checked before it is used ------------------------------
Entries::Entries(std::string path, TensorMap m) : path_(std::move(path)), m_(std::move(m)) {}

void Entries::damaged(const std::string& key, const std::string& what) const {
  TORCH_CHECK(false, "checkpoint ", path_, " is damaged: '", io::printable(key), "' ", what,
              "; it was not resumed. Delete it, or start over with fresh=True (--fresh)");
}

const at::Tensor& Entries::get(const std::string& key) {
  auto it = m_.find(key);
  if (it == m_.end()) damaged(key, "is missing");
  used_.insert(key);
  return it->second;
}

int64_t Entries::integer(const std::string& key, int64_t lo, int64_t hi) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != at::kLong || t.dim() != 0)
    damaged(key, "must be an int64 scalar, is " + describe(t));
  const int64_t v = t.item<int64_t>();
  if (v < lo || v > hi)
    damaged(key, "is " + std::to_string(v) + ", outside [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return v;
}

double Entries::real(const std::string& key, double lo, double hi) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != at::kDouble || t.dim() != 0)
    damaged(key, "must be a float64 scalar, is " + describe(t));
  const double v = t.item<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    damaged(key, "is " + exact_text(v) + ", not a finite value in [" + exact_text(lo) + ", " +
                     exact_text(hi) + "]");
  return v;
}

std::string Entries::text(const std::string& key) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != at::kByte || t.dim() != 1) damaged(key, "must be text, is " + describe(t));
  return tensor_string(t);
}

const at::Tensor& Entries::like(const std::string& key, const at::Tensor& model) {
  const at::Tensor& t = get(key);
  if (t.scalar_type() != model.scalar_type() || t.sizes() != model.sizes())
    damaged(key, "is " + describe(t) + " where the model has " + describe(model));
  if (at::isFloatingType(t.scalar_type()) && !t.isfinite().all().item<bool>())
    damaged(key, "holds non-finite values");
  return t;
}

void Entries::expect_all_used() const {
  for (const auto& kv : m_)
    if (!used_.count(kv.first)) damaged(kv.first, "is not an entry this checkpoint can have");
}

namespace {

// Parameters and buffers of `m` from `prefix<name>`; batch-norm variances must be >= 0 and
// counters >= 0.
void load_module(Entries& e, const std::string& prefix, torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& item : m.named_parameters(true))
    item.value().copy_(e.like(prefix + item.key(), item.value()));
  for (auto& item : m.named_buffers(true)) {
    const std::string key = prefix + item.key();
    const at::Tensor& t = e.like(key, item.value());
    const bool var = key.size() >= 11 && key.compare(key.size() - 11, 11, "running_var") == 0;
    if ((var || !at::isFloatingType(t.scalar_type())) && t.numel() > 0 &&
        t.lt(0).any().item<bool>())
      e.damaged(key, "holds negative values");
    item.value().copy_(t);
  }
}

// Whether `t` is nonzero somewhere `mask` is false; `t` is the mask's shape, or particles stacked
// along the first dimension ([G * d0, ...]).
bool nonzero_outside(const at::Tensor& t, const at::Tensor& mask) {
  const at::Tensor off = mask.logical_not();
  if (t.sizes() == mask.sizes()) return t.ne(0).logical_and(off).any().item<bool>();
  if (t.dim() == mask.dim() && mask.dim() > 0 && mask.size(0) > 0 &&
      t.size(0) % mask.size(0) == 0 && t.sizes().slice(1) == mask.sizes().slice(1)) {
    std::vector<int64_t> shape{t.size(0) / mask.size(0)};
    for (int64_t d : mask.sizes()) shape.push_back(d);
    return t.reshape(shape).ne(0).logical_and(off.unsqueeze(0)).any().item<bool>();
  }
  return false;  // another layout (a sparse layer's values): checked through the optimizer
}

void check_pruned_zero(Entries& e, const std::string& prefix, torch::nn::Module& m,
                       const Masks& masks) {
  auto named = m.named_parameters(true);
  for (const auto& kv : masks.map())
    if (const at::Tensor* t = named.find(kv.first); t && nonzero_outside(*t, kv.second))
      e.damaged(prefix + kv.first, "has nonzero weights where the mask has pruned them");
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
  auto a = split_lines(saved);
  const auto b = split_lines(now);
  for (auto& l : a) l = io::printable(l, 4 * l.size());
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
  std::map<std::string, std::string> defaults;  // a field added later reads as its default
  for (auto& kv : config_fields(Config{})) defaults[kv.first] = kv.second;
  for (const auto& kv : config_fields(now)) {
    if (kv.first == "rounds") continue;
    auto it = saved.find(kv.first);
    if (it == saved.end() && kv.second == defaults[kv.first]) continue;
    const std::string was = it == saved.end() ? "<missing>" : it->second;
    if (was != kv.second)
      diffs += "\n  " + kv.first + ": checkpoint " + io::printable(was) + ", now " + kv.second;
  }
  return diffs;
}

void save_state(TensorMap& out, const std::string& pre, const ParticleState& st) {
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

// Nonzero where the optimizer's mask `m` (the parameter's dtype, 1 kept) is 0.
bool nonzero_off_mask(const at::Tensor& t, const at::Tensor& m) {
  return m.defined() && t.ne(0).logical_and(m.eq(0)).any().item<bool>();
}

// The training state of the group, checked against the step plan: the step, the position in
// the epoch, the SWA snapshot count and every particle's batch order follow from each other.
void load_state(Entries& e, const std::string& pre, const c10::Device& dev, const Plan& plan,
                int64_t train_size, double momentum, ParticleState& st) {
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

std::string model_key(size_t k, size_t i) {
  return k == 1 ? "cur/model/" : "cur/model/" + std::to_string(i) + "/";
}

}  // namespace

namespace {
constexpr const char* kCheck = "\ncheck=";
std::string check_of(const std::string& body) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(io::fnv1a(body.data(), body.size())));
  return buf;
}
}  // namespace

// A round record as text, one field=value line each (SWAMP_ROUND_FIELDS); a per-particle field
// repeats its line for each particle; the per-layer densities are "layer=<density> <name>" lines.
namespace {
void put(std::ostringstream& o, const char* k, int64_t v) { o << "\n" << k << "=" << v; }
void put(std::ostringstream& o, const char* k, double v) { o << "\n" << k << "=" << exact_text(v); }
void put(std::ostringstream& o, const char* k, const std::vector<double>& v) {
  for (double x : v) o << "\n" << k << "=" << exact_text(x);
}
void put(std::ostringstream& o, const char*, const std::vector<std::pair<std::string, double>>& v) {
  for (const auto& kv : v) o << "\n" << "layer=" << exact_text(kv.second) << " " << kv.first;
}

double number_of(const std::string& k, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  TORCH_CHECK(!v.empty() && end == v.c_str() + v.size(), "has a malformed ", k, " (",
              io::printable(v), ")");
  return d;
}
// Reads one line's value into the field; false where the field takes one line only and had it.
bool take(const std::string& k, const std::string& v, bool first, int64_t& f) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  TORCH_CHECK(!v.empty() && end == v.c_str() + v.size() && errno == 0, "has a malformed ", k, " (",
              io::printable(v), ")");
  f = x;
  return first;
}
bool take(const std::string& k, const std::string& v, bool first, double& f) {
  f = number_of(k, v);
  return first;
}
bool take(const std::string& k, const std::string& v, bool, std::vector<double>& f) {
  f.push_back(number_of(k, v));
  return true;
}
bool take(const std::string& k, const std::string& v, bool,
          std::vector<std::pair<std::string, double>>& f) {
  const auto sp = v.find(' ');
  TORCH_CHECK(sp != std::string::npos, "has a malformed layer line");
  f.emplace_back(v.substr(sp + 1), number_of(k, v.substr(0, sp)));
  return true;
}
void not_computed(double& v) { v = std::numeric_limits<double>::quiet_NaN(); }
template <class T>
void not_computed(T&) {}
// The key a field's lines carry: its name, but "layer" for the per-layer densities.
std::string line_key(const RoundField& f) { return f.kind == "per_layer" ? "layer" : f.name; }
}  // namespace

std::string encode_round(const RoundResult& r) {
  std::ostringstream o;
#define SWAMP_ROUND_PUT(kind, name, init, lo, hi, required, doc) put(o, #name, r.name);
  SWAMP_ROUND_FIELDS(SWAMP_ROUND_PUT)
#undef SWAMP_ROUND_PUT
  const std::string body = o.str().substr(1);  // without the first line break
  return body + kCheck + check_of(body);
}

RoundResult decode_round(const std::string& s) {
  const auto at = s.rfind(kCheck);
  TORCH_CHECK(at != std::string::npos, "has no check line");
  const std::string body = s.substr(0, at);
  TORCH_CHECK(s.substr(at + std::strlen(kCheck)) == check_of(body),
              "does not match its check line (edited?)");
  RoundResult r;
  // fields a record of an earlier swamp_ext lacks read as their defaults (figures: not computed)
#define SWAMP_ROUND_LATER(kind, name, init, lo, hi, required, doc) \
  if (std::string(#kind) == "optional_figure" && !(required)) not_computed(r.name);
  SWAMP_ROUND_FIELDS(SWAMP_ROUND_LATER)
#undef SWAMP_ROUND_LATER
  std::set<std::string> seen;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    TORCH_CHECK(eq != std::string::npos, "has a line that is not field=value");
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    const bool first = seen.insert(k).second;
    bool known = false;
#define SWAMP_ROUND_TAKE(kind, name, init, lo, hi, required, doc)             \
  if (!known && k == (std::string(#kind) == "per_layer" ? "layer" : #name)) { \
    known = true;                                                             \
    TORCH_CHECK(take(k, v, first, r.name), "has ", k, " twice");              \
  }
    SWAMP_ROUND_FIELDS(SWAMP_ROUND_TAKE)
#undef SWAMP_ROUND_TAKE
    TORCH_CHECK(known, "has an unknown field '", io::printable(k), "'");
  }
  for (const RoundField& f : round_fields()) {
    // lists may be empty (no diagnostics, no layer): only single-valued fields must be there
    const bool single = f.kind != "per_particle" && f.kind != "per_layer";
    TORCH_CHECK(!single || !f.required || seen.count(line_key(f)) != 0, "lacks its field ", f.name);
  }
  TORCH_CHECK(
      r.processes >= 1 && r.processes_per_particle >= 1 && r.processes_per_particle <= r.processes,
      "has processes=", r.processes, " and processes_per_particle=", r.processes_per_particle,
      " (expected 1 <= processes_per_particle <= processes)");
  return r;
}

RunCheckpoint::RunCheckpoint(const CheckpointOptions& options, const Config& cfg, const Plan& plan,
                             std::string model_identity, const BatchSource& data)
    : options_(options),
      cfg_(cfg),
      plan_(plan),
      train_size_(data.train_size()),
      identity_(std::move(model_identity)) {
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
    if (cfg_.precision == "fp16")
      m["done/" + std::to_string(i) + "/skipped"] = scalar_i(p.skipped.at(i));
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
  TORCH_CHECK_VALUE(p.rounds_done <= cfg_.rounds && p.masks_round < cfg_.rounds,
                    "the checkpoint in ", options_.dir, " has gone on to round ", p.masks_round,
                    ": ask for at least ", p.masks_round + 1,
                    " rounds to resume it (rounds=", cfg_.rounds, ")");

  // ---- masks: boolean, the model's shapes, as many kept weights as the round records say
  int64_t eligible = 0, kept = 0;
  for (auto& kv : masks.map()) {
    const std::string key = "mask/" + kv.first;
    const at::Tensor& t = e.get(key);
    if (t.scalar_type() != at::kBool || t.sizes() != kv.second.sizes())
      e.damaged(key, "is " + describe(t) + " where the model's mask is " + describe(kv.second));
    kv.second.copy_(t);
    eligible += t.numel();
    kept += t.sum().item<int64_t>();
  }
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
    expect_remaining = r.remaining - prune_count(cfg_.prune_ratio, r.remaining);
  }
  const int64_t expect_kept = finished ? p.results.back().remaining : expect_remaining;
  if (kept != expect_kept)
    e.damaged("mask", "keeps " + std::to_string(kept) + " weights where the round records give " +
                          std::to_string(expect_kept));

  // ---- the last round's average: the masks are what pruning it gave
  if (p.rounds_done > 0) {
    load_module(e, "final/", models.average());
    if (finished) {
      check_pruned_zero(e, "final/", models.average(), masks);
    } else {  // every kept weight at least as large as every pruned one
      auto named = models.average().named_parameters(true);
      double kept_min = HUGE_VAL, pruned_max = 0.0;
      for (const auto& kv : masks.map()) {
        const at::Tensor a = named[kv.first].detach().abs().to(at::kDouble);
        if (kv.second.any().item<bool>())
          kept_min = std::min(kept_min, a.masked_select(kv.second).min().item<double>());
        if (!kv.second.all().item<bool>())
          pruned_max =
              std::max(pruned_max, a.masked_select(kv.second.logical_not()).max().item<double>());
      }
      if (kept_min < pruned_max)
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
    load_state(e, "cur/", models.device(), plan_, train_size_, cfg_.momentum, *r.state);
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
  if (r.remaining != remaining)
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
