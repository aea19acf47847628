"""What a run gives back: each round's record, the round's models, and the Result (final model,
masks, every kept round)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional, Sequence, Union

import torch

from ._core import _C
from .config import Config
from .modules import _ModuleAdapter
from .run_folder import rounds as _rounds
from .run_folder.write import results_json, write_json

__all__ = ["Result", "RoundModels", "RoundRecord", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf. ``rounds`` holds the rounds completed before it happened."""

    def __init__(self, message: str, rounds: list[RoundRecord]) -> None:
        super().__init__(message)
        self.rounds = rounds


# The round record, generated from the core's one list of its fields (SWAMP_ROUND_FIELDS in
# swamp/round_record.h): the C++ struct, this class, results.json and the strict reader follow it.
_PY_TYPES = {"count": int, "figure": float, "optional_figure": Optional[float],
             "per_particle": list[float], "per_layer": dict[str, float]}


def _from_cpp(value: Any, kind: str) -> Any:
    if kind == "optional_figure":
        return None if math.isnan(value) else value
    if kind == "per_particle":
        return list(value)
    if kind == "per_layer":
        return dict(value)
    return value


def _round_record_class() -> type:
    fields_, docs = [], []
    listed = _C.round_fields()
    defaults = _C.RoundResult()
    for f in listed:
        t = _PY_TYPES[f["kind"]]
        if f["required"]:
            fields_.append((f["name"], t))
        else:  # absent from records of earlier versions: the default (a figure: not computed)
            default = None if f["kind"] == "optional_figure" else getattr(defaults, f["name"])
            fields_.append((f["name"], t, field(default=default)))
        docs.append(f"    {f['name']}: {f['doc']}")
    kinds = {f["name"]: f["kind"] for f in listed}

    def from_cpp(cls: type, r: Any) -> Any:
        return cls(**{k: _from_cpp(getattr(r, k), kind) for k, kind in kinds.items()})

    cls = make_dataclass("RoundRecord", fields_, namespace={
        "_from_cpp": classmethod(from_cpp), "__module__": __name__,
        "__doc__": "Figures of one round (its final, averaged model unless stated):\n\n"
                   + "\n".join(docs)})
    return cls


RoundRecord = _round_record_class()


@dataclass
class RoundModels:
    """The models of a finished round (see ``run_imp(on_models=...)``)."""

    round: int
    particles: list[dict[str, torch.Tensor]]  # each particle's solution, as averaged
    average: dict[str, torch.Tensor]  # the round's final model
    masks: dict[str, torch.Tensor]  # the masks the round trained under


@dataclass
class Result:
    config: Config
    dataset: str
    rounds: list[RoundRecord]
    masks: dict[str, torch.Tensor] = field(repr=False)
    _state: dict[str, torch.Tensor] = field(repr=False)
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    _adapter: Optional[_ModuleAdapter] = field(default=None, repr=False)
    # where every round was kept: a run folder, or (no folder) the round files' contents in memory
    _run_dir: Optional[str] = field(default=None, repr=False)
    _kept: dict[int, tuple[dict[str, torch.Tensor], dict[str, str]]] = field(
        default_factory=dict, repr=False)
    # a run of your own module loaded without it (load_run): what it pruned
    _identity: Optional[str] = field(default=None, repr=False)
    # the imp_ensemble baseline (analysis.imp_ensemble): the member runs; its records hold the
    # ensemble's figures and it has no models of its own
    ensemble_of: list[str] = field(default_factory=list)
    # whether the run trained channels-last (Config.channels_last resolved; None: a run folder
    # written before swamp_ext recorded it)
    channels_last: Optional[bool] = None

    @property
    def label(self) -> str:
        """The method as tables and plots name it: ``imp``, ``swamp-4``, ``imp_ensemble(2)``,
        with the pruning strategy when it is not global magnitude."""
        c = self.config
        if self.ensemble_of:
            label = f"{c.method}_ensemble({len(self.ensemble_of)})"
        elif c.method in ("swamp", "swamp_plus"):
            label = f"{c.method}-{c.particles}"
        else:
            label = c.method
        return label if c.pruning == "global" else f"{label}, {c.pruning} pruning"

    @classmethod
    def load(cls, run_dir: Union[str, os.PathLike],
             model: Optional[torch.nn.Module] = None) -> Result:
        """``load_run``: the Result of a run folder (``checkpoint_dir`` / ``--out``)."""
        from .run_folder import load_run

        return load_run(run_dir, model=model)

    def round(self, k: int) -> _rounds.RoundModel:
        """Round k: its record, masks, averaged model (``.to_torch()``) and, with
        ``keep_particles=True``, the particles' solutions."""
        rec = next((r for r in self.rounds if r.round == k), None)
        if rec is None:
            raise IndexError(f"round {k} is not in this run (rounds "
                             f"{[r.round for r in self.rounds]})")
        if k in self._kept:
            masks, state, parts = _rounds.decode_round(*self._kept[k], f"round {k}")
        elif self._run_dir is not None:
            masks, state, parts = _rounds.read_round(self._run_dir, k)
        else:
            raise ValueError(f"round {k} was not kept (run_imp(..., keep_rounds=False))")
        return _rounds.RoundModel(rec, masks, state, parts, self._to_module)

    def _to_module(self, state: dict[str, torch.Tensor], sparse: Any = False,
                   batch_sizes: Sequence[int] = (1, 64), **where: Any) -> torch.nn.Module:
        if self._adapter is not None:
            module = self._adapter.to_module(state).eval()
        elif self._identity is not None:
            raise ValueError("this run pruned your own module: load_run(DIR, model=module) "
                             "rebuilds it")
        else:
            from .models import to_torch

            module = to_torch(self.config.model, state, self.input_shape, self.num_classes)
        if sparse is False:
            return module
        from .inference import sparsify

        example = None
        if sparse == "auto" or (sparse == "2:4" and self.input_shape):
            if not self.input_shape:
                raise ValueError("sparse='auto' times the layers on inputs of the model's shape, "
                                 "which this run does not record (structured inputs): use "
                                 "swamp_ext.inference.sparsify(module, example_input=...)")
            example = torch.zeros((1, *self.input_shape))
        return sparsify(module, sparse=sparse, example_input=example, batch_sizes=batch_sizes,
                        inplace=True, **where).eval()

    @property
    def model(self) -> str:
        """What was pruned: the zoo model's name, or ``python:<module>.<class>``."""
        if self._adapter is not None:
            return self._adapter.identity
        return self._identity or self.config.model

    def to_torch(self, sparse: Any = False, *, batch_sizes: Sequence[int] = (1, 64),
                 device: Any = None, dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
        """The final model as a plain ``torch.nn.Module`` in eval mode: for a run given
        ``model=module``, a copy of that module carrying the final weights. Inputs are what the
        model saw: for uint8 datasets, ``(x / 255 - mean) / std``.

        ``sparse``: ``False`` (default) dense layers, no swamp_ext needed to use the module;
        ``True`` every pruned Linear / Conv2d the sparse CPU kernels compute holds and computes
        with its nonzeros only; ``"auto"`` only those measured faster here at every batch size
        of ``batch_sizes`` (see ``swamp_ext.inference.sparsify``; the choices:
        ``swamp_ext.inference.choices(module)``); ``"2:4"`` (a ``Config(pruning="2:4")`` run, on
        an NVIDIA GPU of compute capability 8.0+: ``device``, default ``"cuda"``, ``dtype``,
        default bfloat16) the 2:4 Linear layers in torch's semi-structured sparse form."""
        where = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        return self._to_module(self._state, sparse, batch_sizes, **where)

    @property
    def dense_layers(self) -> list[str]:
        """Eligible prunable weights the run left whole: with an N:M ``Config.pruning`` the
        layers whose rows are not whole groups of M (as NVIDIA's ASP leaves them)."""
        return [n for n, m in self.masks.items() if bool(m.all())]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Final averaged weights and buffers, zeros where masked. For a run given
        ``model=module``, exactly the keys of ``module.state_dict()`` (loads with strict=True)."""
        if self._adapter is not None:
            return self._adapter.state_dict(self._state)
        return dict(self._state)

    def to_json(self) -> dict[str, Any]:
        """The content of ``results.json``: config, data, versions and every round record."""
        out = results_json(self.config, self.dataset, self.rounds, self._adapter,
                            self.input_shape, self.num_classes, self.channels_last)
        if self.ensemble_of:
            out["ensemble_of"] = list(self.ensemble_of)
        return out

    def save(self, out_dir: Union[str, os.PathLike]) -> None:
        """Writes results.json and model.safetensors (weights, and masks as ``mask.<name>``)."""
        out_dir = os.fspath(out_dir)
        _C.ensure_writable_dir(out_dir, "output folder")
        write_json(os.path.join(out_dir, "results.json"), self.to_json())
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        tensors.update({f"mask.{k}": v.contiguous() for k, v in self.masks.items()})
        # the core's writer: atomic (a temporary file renamed), the permissions the umask gives
        # as every other file of the folder (the safetensors package's file came out 0600)
        _C.io.save_safetensors(os.path.join(out_dir, "model.safetensors"), tensors,
                               {"format": "swamp_ext", "model": self.model})
