// The sparse linear kernels (CPU): CSR / CSC index of a pruning mask and the three products a
// sparse linear layer needs. Internal to swamp_core (see swamp/layers.h for the layer).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

namespace swamp::layers {

// CSR (row-major nonzeros of the mask) and CSC views of one mask. Values live in CSR order.
struct SparseStructure {
  int64_t out = 0, in = 0, nnz = 0;
  at::Tensor row_ptr;  // [out + 1]
  at::Tensor col;      // [nnz]  column of each CSR entry
  at::Tensor col_ptr;  // [in + 1]
  at::Tensor csc_row;  // [nnz]  row of each CSC entry
  at::Tensor csc_pos;  // [nnz]  CSR position of each CSC entry
  at::Tensor
      positions;  // [nnz]  flat index row * in + col of each CSR entry (on the weight's device)
};

// The index of a single-particle [out, in] bool mask.
std::shared_ptr<SparseStructure> build_structure(const at::Tensor& mask);
// y [B, N*out] (batch contiguous) = x W^T + bias with W given by `values` at the mask's nonzeros;
// xT is the input with the batch contiguous, [N*in, B].
at::Tensor spmm_rows(const SparseStructure& s, int64_t particles, const at::Tensor& values,
                     const at::Tensor& bias, const at::Tensor& xT);
// The same product from a CSR matrix [out, in] given as tensors (crow_indices [out + 1],
// col_indices [nnz], both int32 or both int64, checked by the caller) and its values [nnz]:
// y [B, out] with the batch contiguous. Inference (swamp::sparse_linear).
at::Tensor spmm_csr(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
                    const at::Tensor& bias, const at::Tensor& xT);
// The input gradient dxT [N*in, B] from gT [N*out, B].
at::Tensor spmm_cols(const SparseStructure& s, int64_t particles, const at::Tensor& values,
                     const at::Tensor& gT);
// The weight gradient at the nonzeros only, [N*nnz].
at::Tensor sddmm(const SparseStructure& s, int64_t particles, const at::Tensor& gT,
                 const at::Tensor& xT);
// Rows of a [B, F] tensor (of each matrix of [N, B, F]) as a contiguous [F, B] ([N, F, B]).
at::Tensor transposed(const at::Tensor& x);

}  // namespace swamp::layers
