// Analyses of what pruning found (the SWAMP paper's figures): mask overlap between runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "swamp/export.h"

namespace swamp {

// Intersection over union of the kept weights of two masks.
struct Overlap {
  int64_t kept_a = 0, kept_b = 0;     // unpruned entries of each mask
  int64_t intersection = 0, uni = 0;  // kept by both, kept by either
  int64_t total = 0;                  // entries
  double iou() const { return uni == 0 ? 1.0 : static_cast<double>(intersection) / uni; }
};

// Per parameter and over all of them ("" key): two runs' masks of the same parameters (bool,
// same names and shapes; a difference is a c10::ValueError naming it).
SWAMP_API std::map<std::string, Overlap> mask_overlap(const std::map<std::string, at::Tensor>& a,
                                                      const std::map<std::string, at::Tensor>& b);

}  // namespace swamp
