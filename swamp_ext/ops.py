"""Low-level operations of the C++ core."""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch

from ._core import _C

Backend = Literal["auto", "native", "aten"]

__all__ = ["global_magnitude_prune", "global_magnitude_prune_", "nm_fits", "nm_pattern",
           "nm_prune", "prune_count"]


def _as_tensor_list(name: str, value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of tensors, got {type(value).__name__}")
    for i, t in enumerate(value):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return list(value)


def _check_ratio(ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio must be a float in [0, 1), got {type(ratio).__name__}")
    return float(ratio)


def _backend(backend: str) -> object:
    try:
        return getattr(_C.ops.PruneBackend, backend)
    except AttributeError:
        raise ValueError(f"backend must be 'auto', 'native' or 'aten', got {backend!r}") from None


def global_magnitude_prune(
    weights: Sequence[torch.Tensor],
    masks: Optional[Sequence[torch.Tensor]],
    ratio: float,
    *,
    backend: Backend = "auto",
) -> list[torch.Tensor]:
    """Exact global magnitude pruning.

    Returns new bool masks (same shapes and device as ``weights``) that remove exactly
    ``floor(ratio * remaining + 0.5)`` of the entries still unpruned in ``masks`` (all entries
    when ``masks`` is None), smallest ``|w|`` first over all tensors together. Ties are broken by
    position (earlier tensor, then lower flat index, is pruned first), so the same input always
    gives the same masks. Entries already pruned stay pruned. The inputs are not modified.

    The selection streams tensor by tensor (radix select over the float bits of ``|w|``): the extra
    memory is a few small histograms, never a copy of all weights.
    """
    w = _as_tensor_list("weights", weights)
    m = [] if masks is None else _as_tensor_list("masks", masks)
    return _C.ops.global_magnitude_prune(w, m, _check_ratio(ratio), _backend(backend))


def global_magnitude_prune_(
    weights: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    ratio: float,
    *,
    backend: Backend = "auto",
) -> tuple[int, int, float]:
    """In-place variant: updates the contiguous bool ``masks`` and returns
    ``(remaining_before, pruned, threshold)``."""
    w = _as_tensor_list("weights", weights)
    m = _as_tensor_list("masks", masks)
    return _C.ops.global_magnitude_prune_(w, m, _check_ratio(ratio), _backend(backend))


def prune_count(ratio: float, remaining: int) -> int:
    """How many weights a pruning step removes: ``floor(ratio * remaining + 0.5)``."""
    return _C.ops.prune_count(_check_ratio(ratio), int(remaining))


def nm_pattern(pruning: str) -> Optional[tuple[int, int]]:
    """``(N, M)`` of an N:M ``Config.pruning`` such as ``"2:4"``; None for the other strategies
    (``ValueError`` for N:M numbers out of range: 1 <= N < M <= 256)."""
    return _C.ops.parse_nm(str(pruning))


def nm_fits(weight: torch.Tensor, m: int) -> bool:
    """Whether ``weight``'s rows (a conv weight flattened per output channel) split into whole
    groups of ``m``: the layers an N:M run prunes (the others stay dense)."""
    return bool(_C.ops.nm_fits(weight, int(m)))


def nm_prune(weights: Sequence[torch.Tensor], masks: Optional[Sequence[torch.Tensor]],
             keep: int, m: int) -> list[torch.Tensor]:
    """New bool masks keeping, in every group of ``m`` consecutive entries along each row of
    each weight (a conv weight flattened per output channel), the ``keep`` of largest ``|w|``
    among the entries still unpruned in ``masks`` (all, when None); ties go to the lower
    position. Weights whose rows are not whole groups of ``m`` keep their masks."""
    w = _as_tensor_list("weights", weights)
    if masks is None:
        ms = [torch.ones_like(t, dtype=torch.bool) for t in w]
    else:
        ms = [t.clone().contiguous() for t in _as_tensor_list("masks", masks)]
    if isinstance(keep, bool) or not isinstance(keep, int) or isinstance(m, bool) or \
            not isinstance(m, int):
        raise TypeError("keep and m must be integers")
    _C.ops.nm_prune_(w, ms, keep, m)
    return ms
