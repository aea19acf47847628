"""Runs that keep what they found: every round's averaged model (weights and buffers, once) and
its masks bit-packed, optionally the particles' solutions, in ``<run>/rounds/round_<k>.safetensors``
(written by our strict safetensors writer, atomically; read back by our strict reader: nothing in
them runs). ``load_run(DIR)`` gives the Result back with every round."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from .._core import _C
from .write import make_folder

FORMAT = "swamp_ext-round-1"
_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8, 8 entries a byte (the first in the lowest bit)."""
    flat = mask.detach().reshape(-1).to(torch.uint8).cpu()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BITS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The bool tensor of ``shape`` that ``pack_bits`` packed."""
    n = 1
    for d in shape:
        n *= int(d)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (n + 7) // 8:
        raise ValueError(f"packed mask of {packed.numel()} bytes ({packed.dtype}) does not hold "
                         f"shape {list(shape)}")
    bits = (packed.unsqueeze(1) & _BITS).ne(0).reshape(-1)[:n]
    return bits.reshape(shape)


def round_path(run_dir: Union[str, os.PathLike], k: int) -> str:
    """The path of round ``k``'s file in a run folder."""
    return os.path.join(os.fspath(run_dir), "rounds", f"round_{k:03d}.safetensors")


def round_tensors(models: Any, keep_particles: bool) -> tuple[dict[str, torch.Tensor],
                                                            dict[str, str]]:
    """The tensors and metadata of one round's file from a RoundModels."""
    tensors = {f"state.{k}": v.contiguous() for k, v in models.average.items()}
    tensors.update({f"mask.{k}": pack_bits(m) for k, m in models.masks.items()})
    if keep_particles:
        for p, st in enumerate(models.particles):
            tensors.update({f"particle.{p}.{k}": v.contiguous() for k, v in st.items()})
    meta = {"format": FORMAT, "round": str(models.round),
            "mask_shapes": json.dumps({k: list(m.shape) for k, m in models.masks.items()}),
            "particles": str(len(models.particles) if keep_particles else 0)}
    return tensors, meta


def write_round(run_dir: Union[str, os.PathLike], models: Any, keep_particles: bool) -> None:
    """Writes round ``models.round``'s file into ``run_dir/rounds`` (atomically)."""
    folder = os.path.join(os.fspath(run_dir), "rounds")
    make_folder(folder, round_path(run_dir, models.round))
    tensors, meta = round_tensors(models, keep_particles)
    _C.io.save_safetensors(round_path(run_dir, models.round), tensors, meta)


@dataclass
class RoundModel:
    """One round of a run: its record, the masks it trained under, the averaged model (masked,
    batch-norm statistics recomputed) and, when kept, the particles' solutions."""

    record: Any  # RoundRecord
    masks: dict[str, torch.Tensor] = field(repr=False)
    state: dict[str, torch.Tensor] = field(repr=False)
    particles: list[dict[str, torch.Tensor]] = field(repr=False, default_factory=list)
    _to_module: Any = field(repr=False, default=None)

    @property
    def round(self) -> int:
        """The round number."""
        return self.record.round

    @property
    def sparsity(self) -> float:
        """The round's sparsity over the prunable weights."""
        return self.record.sparsity

    def to_torch(self, state: Optional[dict[str, torch.Tensor]] = None, sparse: Any = False, *,
                 batch_sizes: Sequence[int] = (1, 64), device: Any = None,
                 dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
        """The averaged model of this round (or ``state``, e.g. a particle) as a plain
        ``torch.nn.Module`` in eval mode; ``sparse`` as in ``Result.to_torch``."""
        if self._to_module is None:
            raise ValueError("this run pruned your own module: rebuild it and load "
                             "round.state into it (load_state_dict)")
        where = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        return self._to_module(self.state if state is None else state, sparse, batch_sizes,
                               **where)


def decode_round(tensors: dict[str, torch.Tensor], meta: dict[str, str], where: str,
                 ) -> tuple[dict, dict, list]:
    """Checks and decodes a round file's tensors: (masks, averaged state, particles)."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where} is not a swamp_ext round file (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        shapes = json.loads(meta["mask_shapes"])
        n = int(meta["particles"])
    except (KeyError, ValueError, RecursionError) as e:
        raise ValueError(f"{where} has malformed metadata ({type(e).__name__}: {e})") from None
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                        for d in v) for v in shapes.values()):
        raise ValueError(f"{where}: metadata mask_shapes must map names to shapes (lists of "
                         "integers >= 0)")
    held = {key[9:].partition(".")[0] for key in tensors if key.startswith("particle.")}
    if not 0 <= n <= len(held):  # a count is bounded by the entries the file holds
        raise ValueError(f"{where}: metadata claims {n} particles where the file holds "
                         f"{len(held)}")
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("state.")}
    masks = {}
    for k, shape in shapes.items():
        if f"mask.{k}" not in tensors:
            raise ValueError(f"{where} lacks the mask of {k!r}")
        try:
            masks[k] = unpack_bits(tensors[f"mask.{k}"], shape)
        except ValueError as e:
            raise ValueError(f"{where}: {k!r}: {e}") from None
    particles: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, v in tensors.items():
        if key.startswith("particle."):
            p, _, name = key[9:].partition(".")
            if not p.isdigit() or int(p) >= n:
                raise ValueError(f"{where} has an entry {key!r} beyond its {n} particles")
            particles[int(p)][name] = v
    known = {f"state.{k}" for k in state} | {f"mask.{k}" for k in shapes}
    extra = [k for k in tensors if k not in known and not k.startswith("particle.")]
    if extra:
        raise ValueError(f"{where} has unknown entries {extra[:3]}")
    return masks, state, particles


def read_round(run_dir: Union[str, os.PathLike], k: int) -> tuple[dict, dict, list]:
    """Reads round ``k``'s file of a run folder strictly: (masks, averaged state, particles)."""
    path = round_path(run_dir, k)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: round {k} was not kept (keep_rounds=False, or the run "
                                "was made by an older swamp_ext)")
    try:
        tensors, meta = _C.io.load_safetensors(path)
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if path in msg else f"{path}: {msg}") from None
    return decode_round(dict(tensors), dict(meta), path)
