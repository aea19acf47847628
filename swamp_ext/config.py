"""Run configuration, validated at construction: types here, ranges and combinations by the C++
core's validate_config (the one source of those rules, shared with C++ users)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from . import _C

METHODS = ("imp", "imp_swa", "swamp", "swamp_plus")
SCHEDULES = ("cosine", "step", "constant")

__all__ = ["Config", "METHODS", "SCHEDULES"]


def _fail(name: str, msg: str) -> ValueError:
    return ValueError(f"Config.{name}: {msg}")



@dataclass
class Config:
    """Configuration of an IMP / SWAMP run.

    method: ``imp`` (1 particle, no SWA), ``imp_swa`` (1 particle with SWA), ``swamp``
    (``particles`` particles with SWA, averaged), ``swamp_plus`` (1 particle for the first
    ``single_particle_rounds`` rounds, then ``particles``).
    Each round trains from the rewind point (``rewind_epochs`` or ``rewind_steps``) to ``epochs``;
    SWA methods switch to the constant ``swa_lr`` after ``swa_start`` x epochs and average the
    weights at the end of every epoch from then on. ``use_swa`` (None = the method's default)
    forces SWA on or off.
    pruning: how a round's mask shrinks: ``global`` magnitude over all eligible weights (the
    method), ``layerwise`` magnitude (each layer loses ``prune_ratio`` of its weights) or
    ``random`` (the control: each layer loses as many weights as global magnitude would take
    from it, at random positions).
    precision: ``fp32`` (default), ``bf16`` or ``fp16`` (torch.amp's mixed precision): the
    training forward pass and loss run under ``torch.autocast`` in that dtype on the run's
    device, also around your own module's forward; weights, gradients, momentum, SWA, the
    average, batch-norm statistics, pruning, evaluation and the batch-norm recompute stay
    float32. ``fp16`` scales the loss dynamically (GradScaler's rule, the scale in checkpoints):
    a step whose gradients overflow is skipped and counted in ``RoundRecord.skipped_steps``.
    particle_mode: how a round's particles train: ``stacked`` (one model holding all of them),
    ``sequential`` (one after the other), ``threads`` (CPU: side by side, one thread each) or
    ``auto`` (the faster here; ``swamp_ext._C.models.particle_path`` tells which). All agree to
    float rounding.
    """

    model: str = "lenet_300_100"
    method: str = "swamp"
    particles: int = 4
    rounds: int = 5
    prune_ratio: float = 0.2
    epochs: int = 10
    rewind_epochs: int = 1
    rewind_steps: Optional[int] = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    swa_start: float = 0.75
    swa_lr: float = 0.05
    use_swa: Optional[bool] = None
    single_particle_rounds: int = 2
    keep_first_last_dense: bool = False
    pruning: str = "global"
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 1000
    bn_batch_size: int = 0
    deterministic: bool = False
    augment: bool = False
    crop_padding: int = 4
    flip: bool = True
    particle_mode: str = "auto"
    sparse_kernels: str = "auto"
    sparse_density: float = 0.5
    sparse_conv_density: float = 0.1
    precision: str = "fp32"
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.extra:
            raise _fail("extra", "is reserved")
        ints = (
            "particles",
            "rounds",
            "epochs",
            "rewind_epochs",
            "batch_size",
            "single_particle_rounds",
            "seed",
            "eval_batch_size",
            "bn_batch_size",
            "crop_padding",
        )
        floats = (
            "prune_ratio",
            "lr",
            "momentum",
            "weight_decay",
            "warmup_epochs",
            "swa_start",
            "swa_lr",
            "sparse_density",
            "sparse_conv_density",
        )
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Config.{name} must be an int, got {type(v).__name__}")
        for name in floats:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"Config.{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(v):
                raise _fail(name, f"must be finite, got {v}")
            setattr(self, name, float(v))
        for name in ("model", "method", "schedule", "device", "particle_mode", "sparse_kernels",
                     "pruning", "precision"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise TypeError(f"Config.{name} must be a string, got {type(v).__name__}")
        for name in ("nesterov", "keep_first_last_dense", "deterministic", "augment", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Config.{name} must be a bool")
        if self.use_swa is not None and not isinstance(self.use_swa, bool):
            raise TypeError("Config.use_swa must be None, True or False")
        if self.rewind_steps is not None and (
            isinstance(self.rewind_steps, bool) or not isinstance(self.rewind_steps, int)
        ):
            raise TypeError("Config.rewind_steps must be None or an int")

        if self.seed < 0 or self.seed >= 2**64:
            raise _fail("seed", f"must be in [0, 2**64), got {self.seed}")
        # Ranges and combinations: checked once, in the C++ core (the same check guards C++
        # users), with messages naming the field ("Config.<field>: ...").
        _C.validate_config(self.to_cpp())

    # ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ValueError(f"unknown Config field(s): {', '.join(unknown)}")
        return cls(**d)

    def to_cpp(self) -> Any:
        c = _C.Config()
        for name in self.fields():
            v = getattr(self, name)
            if name == "rewind_steps":
                v = -1 if v is None else v
            elif name == "use_swa":
                v = -1 if v is None else int(v)
            setattr(c, name, v)
        return c
