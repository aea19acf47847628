// Checkpoint files: a named set of tensors, written atomically and verified by a checksum.
//
// Layout: a torch archive (zip) followed by a 24-byte trailer: magic "SWAMPCK1", the archive's
// length and its 64-bit FNV-1a hash. Writes go to "<path>.tmp", are fsync'ed, renamed over <path>
// and the folder is fsync'ed: a crash at any instant leaves the old or the new file, never a mix.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "swamp/export.h"

namespace swamp {

using TensorMap = std::map<std::string, at::Tensor>;

// Throws c10::Error (RuntimeError) naming the file when it cannot be written (disk full,
// permissions); the previous file at `path` is left untouched then.
SWAMP_API void save_tensors_atomic(const std::string& path, const TensorMap& tensors);
// Throws c10::Error naming the file when it is truncated, corrupt (checksum mismatch) or not a
// checkpoint. Tensors are loaded on the CPU.
SWAMP_API TensorMap load_tensors_verified(const std::string& path);
SWAMP_API bool file_exists(const std::string& path);

// Strings and scalars stored as tensors.
SWAMP_API at::Tensor string_tensor(const std::string& s);
SWAMP_API std::string tensor_string(const at::Tensor& t);

}  // namespace swamp
