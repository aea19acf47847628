#include "files.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "swamp/checkpoint.h"

namespace swamp::io {
namespace {

std::string dirname_of(const std::string& path) {
  const auto pos = path.find_last_of('/');
  return pos == std::string::npos ? std::string(".") : (pos == 0 ? "/" : path.substr(0, pos));
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

[[noreturn]] void fail_write(const std::string& path, const std::string& what, const char* step,
                             int err) {
  throw FileWriteError(
      c10::str("cannot write ", what, " ", path, ": ", step, " failed: ", std::strerror(err),
               err == ENOSPC || err == EFBIG ? " (disk full?)" : "",
               "; the previous file, if any, is unchanged"),
      err, path);
}

}  // namespace

std::string read_regular_file(const std::string& path, const std::string& what, size_t min_size) {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    TORCH_CHECK(false, "cannot open ", what, " ", path, ": ", std::strerror(err));
  }
  struct stat st;
  const bool stat_ok = ::fstat(fd, &st) == 0;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    ::close(fd);
    TORCH_CHECK(false, what, " ", path, " is ", stat_ok ? kind_of(st.st_mode) : "unreadable",
                ", not a regular file; it was not read");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size < min_size) {
    ::close(fd);
    TORCH_CHECK(false, what, " ", path, " is too short (", size, " bytes) to be one",
                size == 0 ? " (empty)" : "", "; it was not read");
  }
  std::string bytes;
  try {
    bytes.resize(size);
  } catch (const std::bad_alloc&) {
    ::close(fd);
    TORCH_CHECK(false, "cannot read ", what, " ", path, ": not enough memory for its ", size,
                " bytes");
  }
  size_t off = 0;
  while (off < size) {
    const ssize_t r = ::read(fd, &bytes[off], size - off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = r < 0 ? errno : 0;
      ::close(fd);
      TORCH_CHECK(false, "cannot read ", what, " ", path, ": ",
                  err ? std::strerror(err) : "it shrank while being read");
    }
    off += static_cast<size_t>(r);
  }
  char extra = 0;
  const ssize_t more = ::read(fd, &extra, 1);
  ::close(fd);
  TORCH_CHECK(more <= 0, "cannot read ", what, " ", path, ": it grew while being read");
  return bytes;
}

void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& what,
                       const ChunkObserver& observer) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_write(path, what, "open", errno);
  const size_t max_chunk = observer ? std::max<size_t>(1, bytes.size() / 2) : (size_t{1} << 30);
  size_t off = 0;
  while (off < bytes.size()) {
    const size_t chunk = std::min(max_chunk, bytes.size() - off);
    const ssize_t w = ::write(fd, bytes.data() + off, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail_write(path, what, "write", err);
    }
    off += static_cast<size_t>(w);
    if (observer) observer(tmp, off, bytes.size());
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_write(path, what, "fsync", err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_write(path, what, "rename", err);
  }
  const int dfd = ::open(dirname_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string printable(const std::string& s, size_t max_len) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace swamp::io
