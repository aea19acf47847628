// A mask's CSR / CSC index kept in an autograd context between forward and backward (the sparse
// linear and conv functions). Internal to swamp_core.
#pragma once

#include <torch/autograd.h>

#include <vector>

#include "sparse_kernels.h"

namespace swamp::layers {

inline void save_structure(torch::autograd::AutogradContext* ctx, const SparseStructure& s) {
  ctx->saved_data["shape"] = std::vector<int64_t>{s.out, s.in, s.nnz};
  ctx->saved_data["row_ptr"] = s.row_ptr;
  ctx->saved_data["col"] = s.col;
  ctx->saved_data["col_ptr"] = s.col_ptr;
  ctx->saved_data["csc_row"] = s.csc_row;
  ctx->saved_data["csc_pos"] = s.csc_pos;
}

inline SparseStructure saved_structure(torch::autograd::AutogradContext* ctx) {
  SparseStructure s;
  const auto shape = ctx->saved_data["shape"].toIntVector();
  s.out = shape[0];
  s.in = shape[1];
  s.nnz = shape[2];
  s.row_ptr = ctx->saved_data["row_ptr"].toTensor();
  s.col = ctx->saved_data["col"].toTensor();
  s.col_ptr = ctx->saved_data["col_ptr"].toTensor();
  s.csc_row = ctx->saved_data["csc_row"].toTensor();
  s.csc_pos = ctx->saved_data["csc_pos"].toTensor();
  return s;
}

}  // namespace swamp::layers
