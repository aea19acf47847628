#include "swamp/checkpoint.h"

#include <ATen/Functions.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace swamp {
namespace {

constexpr char kMagic[8] = {'S', 'W', 'A', 'M', 'P', 'C', 'K', '1'};
constexpr size_t kTrailer = 24;

uint64_t fnv1a(const char* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string dirname_of(const std::string& path) {
  const auto pos = path.find_last_of('/');
  return pos == std::string::npos ? std::string(".") : (pos == 0 ? "/" : path.substr(0, pos));
}

[[noreturn]] void fail_write(const std::string& path, const char* what, int err) {
  TORCH_CHECK(false, "cannot write checkpoint ", path, ": ", what, " failed: ", std::strerror(err),
              err == ENOSPC || err == EFBIG ? " (disk full?)" : "",
              "; the previous checkpoint, if any, is unchanged");
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
  torch::serialize::OutputArchive archive;
  for (const auto& kv : tensors) archive.write(kv.first, kv.second.detach().cpu());
  std::string bytes;
  archive.save_to([&](const void* data, size_t n) -> size_t {
    bytes.append(static_cast<const char*>(data), n);
    return n;
  });
  const uint64_t len = bytes.size();
  const uint64_t hash = fnv1a(bytes.data(), bytes.size());
  bytes.append(kMagic, sizeof(kMagic));
  bytes.append(reinterpret_cast<const char*>(&len), sizeof(len));
  bytes.append(reinterpret_cast<const char*>(&hash), sizeof(hash));

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_write(path, "open", errno);
  WriteObserver watch;
  {
    std::lock_guard<std::mutex> lock(observer_mutex());
    watch = observer();
  }
  const size_t max_chunk = std::max<size_t>(1, bytes.size() / 2);
  size_t off = 0;
  while (off < bytes.size()) {
    const size_t chunk = std::min(max_chunk, bytes.size() - off);
    const ssize_t w = ::write(fd, bytes.data() + off, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail_write(path, "write", err);
    }
    off += static_cast<size_t>(w);
    if (watch) watch(tmp, off, bytes.size());
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_write(path, "fsync", err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_write(path, "rename", err);
  }
  const int dfd = ::open(dirname_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

TensorMap load_tensors_verified(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open checkpoint ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  TORCH_CHECK(bytes.size() >= kTrailer &&
                  std::memcmp(bytes.data() + bytes.size() - kTrailer, kMagic, sizeof(kMagic)) == 0,
              "checkpoint ", path,
              " is truncated or not a swamp_ext checkpoint (no trailer); it was not loaded. "
              "Delete it, or start fresh, to train again");
  uint64_t len = 0, hash = 0;
  std::memcpy(&len, bytes.data() + bytes.size() - 16, sizeof(len));
  std::memcpy(&hash, bytes.data() + bytes.size() - 8, sizeof(hash));
  TORCH_CHECK(len == bytes.size() - kTrailer, "checkpoint ", path,
              " is truncated or corrupt (length mismatch); it was not loaded");
  TORCH_CHECK(fnv1a(bytes.data(), len) == hash, "checkpoint ", path,
              " is corrupt (checksum mismatch); it was not loaded. Delete it, or start fresh");
  torch::serialize::InputArchive archive;
  archive.load_from(bytes.data(), len, c10::Device(c10::kCPU));
  TensorMap out;
  for (const auto& key : archive.keys()) {
    at::Tensor t;
    archive.read(key, t);
    out[key] = t;
  }
  return out;
}

}  // namespace swamp
