"""Analyses of what pruning found (the SWAMP paper's arguments), computed in the C++ core.

* ``mask_overlap(a, b)``: intersection over union of two runs' kept weights at equal sparsity,
  per layer and overall (``swamp-ext analyze overlap RUN_A RUN_B --round K``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

from . import _C


@dataclass(frozen=True)
class Overlap:
    """IoU of two masks' kept weights (``kept_a``, ``kept_b`` of ``total``)."""

    iou: float
    intersection: int
    union: int
    kept_a: int
    kept_b: int
    total: int


def _masks(x: Any) -> dict[str, torch.Tensor]:
    if isinstance(x, dict):
        return x
    masks = getattr(x, "masks", None)  # a RoundModel or a Result (its final masks)
    if isinstance(masks, dict):
        return masks
    raise TypeError("expected masks by parameter name, a Result or a round, got "
                    f"{type(x).__name__}")


def mask_overlap(a: Union[dict, Any], b: Union[dict, Any]) -> dict[str, Overlap]:
    """Per parameter and overall (key ``""``): IoU of two mask sets of the same parameters
    (dicts of bool tensors, ``result.round(k)`` or Results). Compare masks of equal sparsity
    (the same round of runs with the same prune ratio): IoU is 1 for identical masks and about
    d / (2 - d) for independent random masks of density d."""
    out = _C.analysis.mask_overlap(_masks(a), _masks(b))
    return {k: Overlap(v.iou, v.intersection, v.union, v.kept_a, v.kept_b, v.total)
            for k, v in out.items()}
