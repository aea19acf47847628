// Checkpoint files: a named set of tensors, written atomically and verified by a checksum.
//
// Layout: a safetensors body (a JSON header with every tensor's dtype, shape and offsets, no code)
// followed by a 24-byte trailer: magic "SWAMPCK2", the body's length and its 64-bit FNV-1a hash.
// Only regular files are read (a FIFO or a device is refused, never waited on); every size and
// offset is checked against the file before a byte of data is touched. Writes go to "<path>.tmp",
// are fsync'ed, renamed over <path> and the folder is fsync'ed: a crash at any instant leaves the
// old or the new file, never a mix.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <functional>
#include <map>
#include <string>

#include "swamp/export.h"

namespace swamp {

using TensorMap = std::map<std::string, at::Tensor>;

// A file of the core's that could not be written (disk full, permissions, a read-only folder):
// the system's error number, the file, and a message that names what was kept (the previous
// file is left untouched). Python: swamp_ext.FileWriteError, an OSError.
class SWAMP_API FileWriteError : public c10::Error {
 public:
  FileWriteError(std::string message, int error_number, std::string path)
      : c10::Error(std::move(message)), errno_(error_number), path_(std::move(path)) {}
  int error_number() const { return errno_; }
  const std::string& path() const { return path_; }

 private:
  int errno_;
  std::string path_;
};

// Throws FileWriteError naming the file when it cannot be written (disk full, permissions); the
// previous file at `path` is left untouched then.
SWAMP_API void save_tensors_atomic(const std::string& path, const TensorMap& tensors);
// Throws c10::Error naming the file when it is truncated, corrupt (checksum mismatch) or not a
// checkpoint. Tensors are loaded on the CPU.
SWAMP_API TensorMap load_tensors_verified(const std::string& path);
// Rewrites the trailer of `path` for its current body: a hand-edited (or fuzzed) body then looks
// intact to the checksum, and only the checks of its content stand between it and a run. For
// tests of those checks; never called by the engine.
SWAMP_API void reseal_checkpoint(const std::string& path);
// Whether `path` exists (any kind of file).
SWAMP_API bool file_exists(const std::string& path);
// Creates `dir` (and its parents) if needed and checks that files can be written in it; throws
// c10::ValueError naming `what` and the folder otherwise. The one writability check of the
// project (checkpoint folders, result folders).
SWAMP_API void ensure_writable_dir(const std::string& dir, const std::string& what);

// Watches checkpoint writes (a test seam: the fault-injection tests kill the process half-way
// through a write, see swamp_ext.testing). The writer writes a file in chunks of at most half
// its size and calls the observer after each chunk with the temporary file's path, the bytes
// written so far and the total. Process-wide; an empty function removes it.
using WriteObserver =
    std::function<void(const std::string& tmp_path, size_t written, size_t total)>;
// Installs `observer` for every later checkpoint write of the process.
SWAMP_API void set_checkpoint_write_observer(WriteObserver observer);

// Strings and scalars stored as tensors.
SWAMP_API at::Tensor string_tensor(const std::string& s);
SWAMP_API std::string tensor_string(const at::Tensor& t);

}  // namespace swamp
