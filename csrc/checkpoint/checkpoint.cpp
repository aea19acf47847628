#include "swamp/checkpoint.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "../io/files.h"
#include "../io/safetensors_bytes.h"

namespace swamp {
namespace {

constexpr char kOldMagic[8] = {'S', 'W', 'A', 'M', 'P', 'C', 'K', '1'};  // torch archive body
constexpr char kMagic[8] = {'S', 'W', 'A', 'M', 'P', 'C', 'K', '2'};     // safetensors body
constexpr size_t kTrailer = 24;

// `body` + the trailer: magic, the body's length and its FNV-1a hash.
void append_trailer(std::string& body) {
  const uint64_t len = body.size();
  const uint64_t hash = io::fnv1a(body.data(), body.size());
  body.append(kMagic, sizeof(kMagic));
  body.append(reinterpret_cast<const char*>(&len), sizeof(len));
  body.append(reinterpret_cast<const char*>(&hash), sizeof(hash));
}

std::mutex& observer_mutex() {
  static std::mutex m;
  return m;
}
WriteObserver& observer() {
  static WriteObserver o;
  return o;
}

}  // namespace

at::Tensor string_tensor(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  if (!s.empty()) std::memcpy(t.mutable_data_ptr(), s.data(), s.size());
  return t;
}

std::string tensor_string(const at::Tensor& t) {
  at::Tensor c = t.contiguous().cpu();
  return std::string(static_cast<const char*>(c.const_data_ptr()), static_cast<size_t>(c.numel()));
}

void set_checkpoint_write_observer(WriteObserver o) {
  std::lock_guard<std::mutex> lock(observer_mutex());
  observer() = std::move(o);
}

void ensure_writable_dir(const std::string& dir, const std::string& what) {
  TORCH_CHECK_VALUE(!dir.empty(), "cannot write to ", what, ": empty path");
  int err = 0;
  for (size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {  // mkdir -p
    const std::string part = pos == std::string::npos ? dir : dir.substr(0, pos);
    if (!part.empty() && ::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) err = errno;
    if (pos == std::string::npos) break;
  }
  struct stat st;
  const bool exists = ::stat(dir.c_str(), &st) == 0;
  TORCH_CHECK_VALUE(exists && S_ISDIR(st.st_mode), "cannot write to ", what, " ", dir, ": ",
                    exists ? "a file is in the way" : "the folder cannot be created",
                    err != 0 && !exists ? std::string(" (") + std::strerror(err) + ")" : "");
  const std::string probe = dir + "/.swamp-write-test";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  err = errno;
  TORCH_CHECK_VALUE(fd >= 0, "cannot write to ", what, " ", dir, ": not writable (",
                    std::strerror(err), ")");
  ::close(fd);
  ::unlink(probe.c_str());
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void save_tensors_atomic(const std::string& path, const TensorMap& tensors) {
  std::map<std::string, at::Tensor> cpu;
  for (const auto& kv : tensors) cpu[kv.first] = kv.second.detach().cpu();
  std::string bytes = safetensors_bytes(cpu);
  append_trailer(bytes);
  WriteObserver watch;
  {
    std::lock_guard<std::mutex> lock(observer_mutex());
    watch = observer();
  }
  io::write_file_atomic(path, bytes, "checkpoint", watch);
}

TensorMap load_tensors_verified(const std::string& path) {
  std::string bytes = io::read_regular_file(path, "checkpoint", 0);
  const char* tail = bytes.size() >= kTrailer ? bytes.data() + bytes.size() - kTrailer : nullptr;
  if (tail != nullptr && std::memcmp(tail, kOldMagic, sizeof(kOldMagic)) == 0)
    TORCH_CHECK(false, "checkpoint ", path,
                " was written by an earlier swamp_ext (format 1); it was not loaded. Resume it "
                "with that version, or start over with fresh=True (--fresh)");
  TORCH_CHECK(tail != nullptr && std::memcmp(tail, kMagic, sizeof(kMagic)) == 0, "checkpoint ",
              path,
              " is truncated or not a swamp_ext checkpoint (no trailer); it was not loaded. "
              "Delete it, or start fresh, to train again");
  uint64_t len = 0, hash = 0;
  std::memcpy(&len, tail + 8, sizeof(len));
  std::memcpy(&hash, tail + 16, sizeof(hash));
  TORCH_CHECK(len == bytes.size() - kTrailer, "checkpoint ", path,
              " is truncated or corrupt (length mismatch); it was not loaded");
  TORCH_CHECK(io::fnv1a(bytes.data(), len) == hash, "checkpoint ", path,
              " is corrupt (checksum mismatch); it was not loaded. Delete it, or start fresh");
  bytes.resize(len);
  try {
    return parse_safetensors(bytes, path).tensors;
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint ", path, " is damaged (", e.what_without_backtrace(),
                "); it was not loaded. Delete it, or start over with fresh=True (--fresh)");
  }
}

void reseal_checkpoint(const std::string& path) {
  std::string bytes = io::read_regular_file(path, "checkpoint", kTrailer);
  bytes.resize(bytes.size() - kTrailer);
  append_trailer(bytes);
  io::write_file_atomic(path, bytes, "checkpoint");
}

}  // namespace swamp
