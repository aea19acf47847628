// .safetensors reading and writing (see swamp/safetensors.h). The header is JSON; the reader
// parses only what the format allows (objects, arrays, strings, non-negative integers) and checks
// every offset against the file before touching the data.
#include "swamp/safetensors.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "files.h"
#include "safetensors_bytes.h"

namespace swamp {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit (100 MB)

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kHalf, "F16"},  {at::kBFloat16, "BF16"},
    {at::kLong, "I64"},   {at::kInt, "I32"},   {at::kShort, "I16"}, {at::kChar, "I8"},
    {at::kByte, "U8"},    {at::kBool, "BOOL"},
};

const char* dtype_name(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  TORCH_CHECK_TYPE(false, "safetensors: cannot store dtype ", t);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// ---- a JSON reader for the header -----------------------------------------------------------
struct Json {
  enum Kind { kObject, kArray, kString, kNumber } kind = kNumber;
  std::vector<std::pair<std::string, Json>> members;  // object
  std::vector<Json> items;                            // array
  std::string text;                                   // string
  uint64_t number = 0;
  const Json* get(const std::string& key) const {
    for (const auto& m : members)
      if (m.first == key) return &m.second;
    return nullptr;
  }
};

class Parser {
 public:
  Parser(const std::string& path, const char* s, size_t n) : path_(path), s_(s), n_(n) {}
  Json parse() {
    Json v = value(0);
    ws();
    fail_if(i_ != n_ && !only_padding(), "trailing bytes after the header");
    return v;
  }

 private:
  bool only_padding() const {  // the format pads the header with spaces
    for (size_t k = i_; k < n_; ++k)
      if (s_[k] != ' ') return false;
    return true;
  }
  void fail_if(bool bad, const char* what) const {
    TORCH_CHECK_VALUE(!bad, "safetensors file ", path_, ": damaged header (", what, " at byte ",
                      i_ + 8, ")");
  }
  void ws() {
    while (i_ < n_ && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  char peek() {
    ws();
    fail_if(i_ >= n_, "unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    fail_if(peek() != c, "unexpected character");
    ++i_;
  }
  Json value(int depth) {
    fail_if(depth > 8, "nested too deeply");
    const char c = peek();
    Json v;
    if (c == '{') {
      v.kind = Json::kObject;
      ++i_;
      if (peek() == '}') {
        ++i_;
        return v;
      }
      for (;;) {
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++i_;
      if (peek() == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.items.push_back(value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      v.text = string();
      return v;
    }
    fail_if(c < '0' || c > '9', "expected a value");
    while (i_ < n_ && s_[i_] >= '0' && s_[i_] <= '9') {
      fail_if(v.number > (UINT64_MAX - 9) / 10, "number too large");
      v.number = v.number * 10 + static_cast<uint64_t>(s_[i_++] - '0');
    }
    return v;
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      fail_if(i_ >= n_, "unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      fail_if(i_ >= n_, "unterminated string");
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          fail_if(i_ + 4 > n_, "bad escape");
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = s_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
              cp |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
              cp |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              cp |= static_cast<unsigned>(h - 'A' + 10);
            else
              fail_if(true, "bad escape");
          }
          // UTF-8 of the code point (surrogate pairs are kept as two code points)
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default:
          fail_if(true, "bad escape");
      }
    }
  }

  const std::string& path_;
  const char* s_;
  size_t n_;
  size_t i_ = 0;
};

}  // namespace

std::string safetensors_bytes(const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> data;
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& kv : metadata) {
      header += (first ? "" : ",") + json_string(kv.first) + ":" + json_string(kv.second);
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto& kv : tensors) {
    TORCH_CHECK_VALUE(kv.first != "__metadata__",
                      "safetensors: '__metadata__' is not a tensor name");
    TORCH_CHECK_VALUE(kv.second.defined(), "safetensors: tensor '", kv.first, "' is undefined");
    at::Tensor t = kv.second.detach().cpu().contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header += std::string(header.size() > 1 ? "," : "") + json_string(kv.first) + ":{\"dtype\":\"" +
              dtype_name(t.scalar_type()) + "\",\"shape\":[";
    for (int64_t d = 0; d < t.dim(); ++d) header += (d ? "," : "") + std::to_string(t.size(d));
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
    data.push_back(std::move(t));
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::string bytes;
  const uint64_t n = header.size();
  bytes.reserve(8 + header.size() + offset);
  for (int k = 0; k < 8; ++k) bytes += static_cast<char>((n >> (8 * k)) & 0xff);
  bytes += header;
  for (const auto& t : data)
    bytes.append(static_cast<const char*>(t.const_data_ptr()),
                 static_cast<size_t>(static_cast<uint64_t>(t.numel()) * t.element_size()));
  return bytes;
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // a failed write is a FileWriteError (Python: an OSError with errno and the file)
  io::write_file_atomic(path, safetensors_bytes(tensors, metadata), "safetensors file");
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::string bytes;
  try {
    bytes = io::read_regular_file(path, "safetensors file");
  } catch (const c10::ValueError&) {
    throw;
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, e.what_without_backtrace());
  }
  return parse_safetensors(bytes, path);
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& path) {
  TORCH_CHECK_VALUE(bytes.size() >= 8, "safetensors file ", path, ": too short (", bytes.size(),
                    " bytes)");
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[k])) << (8 * k);
  TORCH_CHECK_VALUE(n <= kMaxHeader && n <= bytes.size() - 8, "safetensors file ", path,
                    ": header size ", n, " does not fit the file (", bytes.size(), " bytes)");
  const Json root = Parser(path, bytes.data() + 8, n).parse();
  TORCH_CHECK_VALUE(root.kind == Json::kObject, "safetensors file ", path,
                    ": the header is not an object");
  const char* data = bytes.data() + 8 + n;
  const uint64_t data_size = bytes.size() - 8 - n;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // the tensors' byte ranges
  for (const auto& m : root.members) {
    const std::string& name = m.first;
    const Json& e = m.second;
    auto bad = [&](const char* what) {
      TORCH_CHECK_VALUE(false, "safetensors file ", path, ": tensor '", name, "': ", what);
    };
    if (name == "__metadata__") {
      if (e.kind != Json::kObject) bad("metadata is not an object");
      for (const auto& kv : e.members) {
        if (kv.second.kind != Json::kString) bad("metadata values must be strings");
        out.metadata[kv.first] = kv.second.text;
      }
      continue;
    }
    if (e.kind != Json::kObject) bad("entry is not an object");
    const Json* dt = e.get("dtype");
    const Json* shape = e.get("shape");
    const Json* offs = e.get("data_offsets");
    if (!dt || dt->kind != Json::kString || !shape || shape->kind != Json::kArray || !offs ||
        offs->kind != Json::kArray || offs->items.size() != 2)
      bad("needs dtype, shape and data_offsets [begin, end]");
    std::optional<at::ScalarType> type;
    for (const auto& d : kDtypes)
      if (dt->text == d.name) type = d.type;
    if (!type) bad(("unsupported dtype " + dt->text).c_str());
    std::vector<int64_t> sizes;
    uint64_t numel = 1;
    for (const auto& d : shape->items) {
      if (d.kind != Json::kNumber || d.number > (uint64_t{1} << 40)) bad("bad shape");
      sizes.push_back(static_cast<int64_t>(d.number));
      if (d.number != 0 && numel > (uint64_t{1} << 62) / d.number) bad("shape too large");
      numel *= d.number;
    }
    const uint64_t begin = offs->items[0].number, end = offs->items[1].number;
    if (offs->items[0].kind != Json::kNumber || offs->items[1].kind != Json::kNumber ||
        begin > end || end > data_size)
      bad("data_offsets outside the file");
    const uint64_t elem = c10::elementSize(*type);
    if (end - begin != numel * elem) bad("data_offsets do not match dtype and shape");
    spans.emplace_back(begin, end);
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(*type));
    if (end > begin) std::memcpy(t.mutable_data_ptr(), data + begin, end - begin);
    if (*type == at::kBool)  // only 0 / 1 are valid bools
      TORCH_CHECK_VALUE(t.view(at::kByte).le(1).all().item<bool>(), "safetensors file ", path,
                        ": tensor '", name, "': bool values other than 0 and 1");
    TORCH_CHECK_VALUE(out.tensors.emplace(name, std::move(t)).second, "safetensors file ", path,
                      ": tensor '", name, "' appears twice");
  }
  // As the format requires: the tensors' ranges tile the data exactly, no gap, no overlap, no
  // bytes after them.
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (const auto& sp : spans) {
    TORCH_CHECK_VALUE(sp.first == at, "safetensors file ", path, ": tensor data ",
                      sp.first < at ? "overlaps" : "leaves a gap", " at byte ", 8 + n + at);
    at = sp.second;
  }
  TORCH_CHECK_VALUE(at == data_size, "safetensors file ", path, ": ", data_size - at,
                    " bytes after the last tensor");
  return out;
}

}  // namespace swamp
