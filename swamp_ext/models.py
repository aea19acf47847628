"""The model registry of the C++ core."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _C

__all__ = ["create", "forward", "names"]


def names() -> list[str]:
    """Names of the registered models."""
    return list(_C.models.names())


def create(
    name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Builds a model in C++; returns its initial state dict and its prunable parameter names."""
    state, prunable = _C.models.create(name, list(input_shape), num_classes, seed)
    return dict(state), list(prunable)


def forward(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """Evaluation-mode forward pass of the C++ model with the given weights."""
    return _C.models.forward(name, list(input_shape), num_classes, state, x)
