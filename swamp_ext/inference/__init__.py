"""Sparse inference: pruned layers computed from their nonzeros (CPU operators of the core)."""

from .convert import LayerChoice, choices, semi_structured_refusal, sparsify, state_bytes
from .files import from_csr
from .modules import SparseConv2d, SparseLinear
from .operators import sparse_conv2d, sparse_linear

__all__ = ["LayerChoice", "SparseConv2d", "SparseLinear", "choices", "from_csr",
           "semi_structured_refusal", "sparse_conv2d", "sparse_linear", "sparsify", "state_bytes"]
