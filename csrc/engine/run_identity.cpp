#include "run_identity.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "../io/files.h"

namespace swamp::engine {

std::string architecture(const torch::nn::Module& m) {
  std::ostringstream out;
  auto line = [&](const char* kind, const std::string& name, const at::Tensor& t) {
    out << kind << " " << name << " " << t.sizes() << " " << t.scalar_type() << "\n";
  };
  for (const auto& item : m.named_parameters(true)) line("parameter", item.key(), item.value());
  for (const auto& item : m.named_buffers(true)) line("buffer", item.key(), item.value());
  return out.str();
}

namespace {
std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}
}  // namespace

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

}  // namespace swamp::engine
