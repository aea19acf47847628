// The .safetensors format in memory (swamp/safetensors.h writes and reads files with it; the
// checkpoint body is one too). Internal to swamp_core.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "swamp/safetensors.h"

namespace swamp {

std::string safetensors_bytes(const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});
// Throws c10::ValueError naming `path` and the problem for anything the format does not allow
// (sizes, offsets, dtypes, duplicate names, bool bytes other than 0/1).
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& path);

}  // namespace swamp
