"""The core's sparse inference operators as torch sees them: ``torch.ops.swamp.sparse_linear`` and
``torch.ops.swamp.sparse_conv2d`` (CPU kernels in C++, csrc/inference/operators.cpp), with the
fake kernels that let ``torch.compile`` and ``torch.export`` trace them without running them."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._core import _C  # noqa: F401  (loading the core registers the operators)

__all__ = ["sparse_conv2d", "sparse_linear"]


@torch.library.register_fake("swamp::sparse_linear")
def _sparse_linear_fake(input: torch.Tensor, crow_indices: torch.Tensor,
                        col_indices: torch.Tensor, values: torch.Tensor,
                        bias: Optional[torch.Tensor], in_features: int) -> torch.Tensor:
    torch._check(input.dim() >= 1 and input.shape[-1] == in_features,
                 lambda: f"swamp::sparse_linear: expected input [..., {in_features}]")
    out = crow_indices.shape[0] - 1
    rows = input.numel() // in_features
    # the kernel's layout: rows contiguous, (1, rows)
    y = input.new_empty_strided((rows, out), (1, torch.sym_max(rows, 1)))
    return y.view(*input.shape[:-1], out)


@torch.library.register_fake("swamp::sparse_conv2d")
def _sparse_conv2d_fake(input: torch.Tensor, crow_indices: torch.Tensor,
                        col_indices: torch.Tensor, values: torch.Tensor,
                        bias: Optional[torch.Tensor], weight_shape: Sequence[int],
                        stride: Sequence[int], padding: Sequence[int]) -> torch.Tensor:
    torch._check(input.dim() == 4 and input.shape[1] == weight_shape[1],
                 lambda: f"swamp::sparse_conv2d: expected input [B, {weight_shape[1]}, H, W]")
    oh = (input.shape[2] + 2 * padding[0] - weight_shape[2]) // stride[0] + 1
    ow = (input.shape[3] + 2 * padding[1] - weight_shape[3]) // stride[1] + 1
    return input.new_empty((input.shape[0], weight_shape[0], oh, ow))


def sparse_linear(input: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
                  values: torch.Tensor, bias: Optional[torch.Tensor],
                  in_features: int) -> torch.Tensor:
    """``input @ W.T + bias`` with ``W`` the ``[out, in_features]`` CSR matrix
    (``crow_indices`` [out + 1], ``col_indices`` and ``values`` [nnz]; indices both int32 or both
    int64). CPU, float32 / float64; every index is checked (``ValueError`` naming the problem).
    The output's rows are contiguous (strides ``(1, rows)`` for a 2-d input)."""
    return torch.ops.swamp.sparse_linear(input, crow_indices, col_indices, values, bias,
                                         in_features)


def sparse_conv2d(input: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor,
                  values: torch.Tensor, bias: Optional[torch.Tensor],
                  weight_shape: Sequence[int], stride: Sequence[int] = (1, 1),
                  padding: Sequence[int] = (0, 0)) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` (dilation 1, groups 1, zero padding) with the weight of
    shape ``weight_shape`` = ``[out, in, kh, kw]`` given as the ``[out, in * kh * kw]`` CSR
    matrix. CPU, float32 / float64, NCHW output."""
    return torch.ops.swamp.sparse_conv2d(input, crow_indices, col_indices, values, bias,
                                         list(weight_shape), list(stride), list(padding))
