// Reading and writing whole files safely. Internal to swamp_core (checkpoints, safetensors).
//
// Reads open only regular files (a FIFO, a device such as /dev/zero or a folder is refused
// before a byte is read, never waited on) and check the size before reading. Writes go to
// "<path>.tmp", are fsync'ed, renamed over <path> and the folder is fsync'ed: a crash at any
// instant leaves the old or the new file, never a mix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace swamp::io {

// The whole of `path` (`what` names it in errors: "checkpoint", "safetensors file"). Throws
// c10::Error naming the file when it is missing, not a regular file, or smaller than `min_size`.
std::string read_regular_file(const std::string& path, const std::string& what,
                              size_t min_size = 0);

// Called after each chunk written with the temporary file's path, the bytes written so far and
// the total; chunks are at most half the file when an observer is given.
using ChunkObserver = std::function<void(const std::string&, size_t, size_t)>;

// Throws swamp::FileWriteError (swamp/checkpoint.h) naming the file when it cannot be written
// (disk full, permissions); the previous file at `path` is left untouched then.
void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& what,
                       const ChunkObserver& observer = nullptr);

// Printable form of bytes read from a file, for error messages: non-printable and non-ASCII
// bytes as \xNN, cut to `max_len` characters.
std::string printable(const std::string& s, size_t max_len = 80);

// 64-bit FNV-1a over bytes, continuing from `h`.
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace swamp::io
