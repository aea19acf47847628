#include "round_text.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "../common/exact_text.h"
#include "../io/files.h"

namespace swamp::engine {

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

}  // namespace swamp::engine
