"""A round's model out of swamp_ext (``swamp-ext export``): through ``to_torch``, as a
safetensors or torch state dict, ONNX (when the ``onnx`` package is installed), or a compressed
sparse file (CSR) whose size shows what the sparsity saves.

CSR file (safetensors, metadata ``format: swamp_ext-csr-1``, ``model``, ``round``,
``input_shape``, ``num_classes``, ``sparse_shapes``): each pruned weight W, seen as the matrix
[W.shape[0], rest], is stored as ``<name>.values`` (its kept entries, row by row),
``<name>.col_indices`` and ``<name>.crow_indices`` (int32 when they fit); every other tensor as
is. ``load_csr(path)`` gives the dense state dict back; ``swamp_ext.inference.from_csr(path)`` a
module computing with the compressed weights, and C++ ``swamp::inference::load_compressed``
runs it without Python.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ._core import _C
from .inference.modules import csr_of
from .run_folder.write import make_folder

FORMATS = ("safetensors", "torch", "onnx", "csr")
CSR_FORMAT = "swamp_ext-csr-1"


@dataclass(frozen=True)
class Exported:
    path: str
    format: str
    bytes: int  # size of the file written
    dense_bytes: int  # the same tensors stored dense (float weights included)

    @property
    def ratio(self) -> float:
        """The file's size as a fraction of the dense tensors' size."""
        return self.bytes / self.dense_bytes if self.dense_bytes else float("nan")


def _dense_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def to_csr(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
           ) -> dict[str, torch.Tensor]:
    """The tensors of a CSR file: masked weights as values / col_indices / crow_indices."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        m = masks.get(name)
        if m is None:
            out[name] = t.contiguous()
            continue
        crow, col, values = csr_of(t.reshape(t.shape[0], -1), m)
        out[f"{name}.values"] = values
        out[f"{name}.col_indices"] = col
        out[f"{name}.crow_indices"] = crow
    return out


def load_csr(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """The dense state dict of a CSR file (zeros where pruned)."""
    return read_csr(path)[0]


def read_csr(path: Union[str, os.PathLike]
             ) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """A CSR file's dense state dict (zeros where pruned), its metadata and the names of the
    weights it stores compressed; every index checked (``ValueError`` naming the problem)."""
    path = os.fspath(path)
    tensors, meta = _C.io.load_safetensors(path)
    if meta.get("format") != CSR_FORMAT:
        raise ValueError(f"{path} is not a swamp_ext CSR file (format {meta.get('format')!r})")
    try:
        shapes = json.loads(meta["sparse_shapes"])
    except (KeyError, ValueError, RecursionError) as e:
        raise ValueError(f"{path} has malformed metadata ({type(e).__name__}: {e})") from None
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and len(v) >= 2 and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v)
            for v in shapes.values()):
        raise ValueError(f"{path}: metadata sparse_shapes must map names to shapes (lists of "
                         "at least two integers >= 0)")
    out = {k: v for k, v in tensors.items()
           if not any(k == f"{n}.{p}" for n in shapes
                      for p in ("values", "col_indices", "crow_indices"))}
    for name, shape in shapes.items():
        try:
            vals = tensors[f"{name}.values"]
            cols = tensors[f"{name}.col_indices"].long()
            crow = tensors[f"{name}.crow_indices"].long()
        except KeyError as e:
            raise ValueError(f"{path}: the CSR entries of {name!r} are incomplete ({e})") from None
        rows_n = int(shape[0])
        cols_n = 1
        for d in shape[1:]:
            cols_n *= int(d)
        ok = (crow.numel() == rows_n + 1 and int(crow[0]) == 0 and
              bool((crow[1:] >= crow[:-1]).all()) and int(crow[-1]) == vals.numel() ==
              cols.numel() and (cols.numel() == 0 or (int(cols.min()) >= 0 and
                                                      int(cols.max()) < cols_n)))
        if not ok:
            raise ValueError(f"{path}: the CSR entries of {name!r} do not describe a "
                             f"{list(shape)} matrix")
        rows = torch.repeat_interleave(torch.arange(rows_n), crow[1:] - crow[:-1])
        try:
            dense = torch.zeros(rows_n, cols_n, dtype=vals.dtype)
        except (MemoryError, RuntimeError) as e:
            raise ValueError(f"{path}: {name!r} claims a {list(shape)} matrix, too large to "
                             f"rebuild here ({type(e).__name__})") from None
        dense[rows, cols] = vals
        out[name] = dense.reshape(shape)
    return out, dict(meta), list(shapes)


def export(result: Any, out: Union[str, os.PathLike], fmt: str = "safetensors",
           round: Optional[int] = None) -> Exported:
    """Writes round ``round`` (default: the last) of ``result`` to ``out`` as ``fmt``:
    ``safetensors`` / ``torch`` (the state dict of ``to_torch()``; torch: load it with
    ``torch.load(path, weights_only=True)``), ``onnx`` (the ``to_torch()`` module, input
    ``[1, *input_shape]``) or ``csr`` (compressed sparse weights, ``load_csr``)."""
    if fmt not in FORMATS:
        raise ValueError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    k = result.rounds[-1].round if round is None else round
    r = result.round(k)
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    make_folder(folder, out)
    if fmt == "csr":
        state = {k2: v.detach().cpu() for k2, v in r.state.items()}
        tensors = to_csr(state, r.masks)
        meta = {"format": CSR_FORMAT, "model": result.model, "round": str(k),
                "input_shape": json.dumps(list(result.input_shape)),
                "num_classes": str(result.num_classes),
                "sparse_shapes": json.dumps({n: list(state[n].shape) for n in r.masks})}
        _C.io.save_safetensors(out, tensors, meta)
        return Exported(out, fmt, os.path.getsize(out), _dense_bytes(state))
    module = r.to_torch()
    state = {k2: v.detach().cpu().contiguous() for k2, v in module.state_dict().items()}
    if fmt == "safetensors":
        _C.io.save_safetensors(out, state, {"format": "swamp_ext-state", "model": result.model,
                                            "round": str(k)})
    elif fmt == "torch":
        tmp = out + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, out)
    else:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ImportError("ONNX export needs the onnx package: pip install onnx") from None
        x = torch.zeros((1, *result.input_shape))
        kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"],
                                  "dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}}
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                torch.onnx.export(module, (x,), out, dynamo=False, **kwargs)
            except TypeError:  # a torch without the dynamo switch
                torch.onnx.export(module, (x,), out, **kwargs)
    return Exported(out, fmt, os.path.getsize(out), _dense_bytes(state))
