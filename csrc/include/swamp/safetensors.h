// The .safetensors format (https://huggingface.co/docs/safetensors): tensors by name with a JSON
// header, no code. What a C++ program writes here the `safetensors` Python package reads, and
// back. Reading checks every size and offset against the file: a damaged or hostile file raises
// c10::ValueError naming the problem, never reads out of bounds.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "swamp/export.h"

namespace swamp {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;    // on the CPU, contiguous
  std::map<std::string, std::string> metadata;  // the "__metadata__" entry
};

// Writes `tensors` (any device; stored contiguous, little-endian) atomically: a temporary file
// renamed over `path`. Dtypes: float64/32/16, bfloat16, int64/32/16/8, uint8, bool. A write that
// fails throws swamp::FileWriteError (swamp/checkpoint.h; the previous file is unchanged).
SWAMP_API void save_safetensors(const std::string& path,
                                const std::map<std::string, at::Tensor>& tensors,
                                const std::map<std::string, std::string>& metadata = {});
// Reads a safetensors file, every size and offset checked against the file first; a damaged
// file is a c10::ValueError naming it. Tensors are loaded on the CPU.
SWAMP_API SafetensorsFile load_safetensors(const std::string& path);

}  // namespace swamp
