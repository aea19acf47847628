"""A compressed model file (``swamp-ext export --format csr``) as a module that computes with its
compressed weights."""

from __future__ import annotations

import copy
import json
import os
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .convert import Sparse, sparsify

__all__ = ["from_csr"]


def _meta_shape(meta: dict[str, str], path: str) -> tuple[int, ...]:
    try:
        shape = json.loads(meta["input_shape"])
        if (isinstance(shape, list) and shape and all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            return tuple(shape)
    except (KeyError, ValueError, RecursionError):
        pass
    raise ValueError(f"{path}: the metadata has no valid input_shape (a file exported before "
                     "swamp_ext recorded it): pass input_shape=... and num_classes=...")


def from_csr(path: Union[str, os.PathLike], *, sparse: Sparse = "auto",
             module: Optional[nn.Module] = None,
             input_shape: Optional[Sequence[int]] = None, num_classes: Optional[int] = None,
             batch_sizes: Sequence[int] = (1, 64)) -> nn.Module:
    """The model of a CSR file as a plain ``nn.Module`` in eval mode whose pruned layers compute
    sparse (``sparse`` and ``batch_sizes`` as in ``sparsify``). A built-in model is rebuilt from
    the file's metadata; for a run of your own module give ``module`` (its architecture; the
    file's tensors are loaded into a copy, strictly)."""
    from ..export import read_csr

    path = os.fspath(path)
    state, meta, compressed = read_csr(path)
    shape = tuple(input_shape) if input_shape is not None else None
    if module is not None:
        net = copy.deepcopy(module)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path} does not fit the module given: {e}") from None
        net.eval()
    else:
        from ..models import to_torch

        name = meta.get("model", "")
        if name.startswith("python:"):
            raise ValueError(f"{path} holds a run of your own module ({name}): pass "
                             "module=<an instance of it>")
        shape = shape or _meta_shape(meta, path)
        if num_classes is None:
            try:
                num_classes = int(meta["num_classes"])
            except (KeyError, ValueError):
                raise ValueError(f"{path}: the metadata has no num_classes: pass "
                                 "num_classes=...") from None
        net = to_torch(name, state, shape, num_classes)
    example = None
    if sparse == "auto":
        shape = shape or (_meta_shape(meta, path) if "input_shape" in meta else None)
        if shape is None:
            raise ValueError(f"{path}: sparse='auto' times the layers on inputs of the model's "
                             "shape: pass input_shape=...")
        example = torch.zeros((1, *shape))
    masks = {n: torch.ones(1) for n in compressed}  # only the names count
    return sparsify(net, sparse=sparse, masks=masks, example_input=example,
                    batch_sizes=batch_sizes, inplace=True).eval()
