"""The model registry of the C++ core."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._core import _C

__all__ = ["create", "forward", "names", "to_torch", "train_throughput"]


def names() -> list[str]:
    """Names of the registered models."""
    return list(_C.models.names())


def create(
    name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Builds a model in C++ with the very weights a run of it with ``seed`` starts from (θ_0);
    returns its state dict and its prunable parameter names. ``to_torch(name, state, ...)``
    turns them into a module that ``run_imp(..., model=module)`` starts from as the zoo does."""
    state, prunable = _C.models.create(name, list(input_shape), num_classes, seed)
    return dict(state), list(prunable)


def to_torch(name: str, state_dict: dict[str, torch.Tensor], input_shape: Sequence[int],
             num_classes: int) -> torch.nn.Module:
    """A plain ``torch.nn.Module`` (pure PyTorch, same parameter names) loaded with
    ``state_dict`` and put in eval mode; it gives the same outputs as the C++ model."""
    from .torch_models import build

    if not _C.models.has(name):
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
    module = build(name, input_shape, num_classes)
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"state_dict does not fit {name}: missing {missing}, unexpected "
                         f"{unexpected}")
    return module.eval()


def train_throughput(name: str, input_shape: Sequence[int], num_classes: int, batch_size: int,
                     steps: int, device: str = "cpu") -> float:
    """Training images per second of the C++ model (forward, backward, masked SGD step)."""
    return _C.models.train_throughput(name, list(input_shape), num_classes, batch_size, steps,
                                      device)


def forward(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """Evaluation-mode forward pass of the C++ model with the given weights, on the device of
    ``x`` (the weights are copied there)."""
    return _C.models.forward(name, list(input_shape), num_classes, state, x)
