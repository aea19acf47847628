"""Run configuration, validated at construction: types here, ranges and combinations by the C++
core's validate_config (the one source of those rules, shared with C++ users)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ._core import _C

METHODS = ("imp", "imp_swa", "swamp", "swamp_plus")
SCHEDULES = ("cosine", "step", "constant")

__all__ = ["Config", "METHODS", "SCHEDULES", "field_docs"]


def _fail(name: str, msg: str) -> ValueError:
    return ValueError(f"Config.{name}: {msg}")


def _doc(default: Any, doc: str, valid: str, choices: Any = None) -> Any:
    """A Config field with its documentation: what it means and which values are valid (the
    reference's Config table is generated from these; ``choices`` is checked against the C++
    validation by the tests)."""
    return field(default=default, metadata={"doc": doc, "valid": valid, "choices": choices})


def field_docs() -> list[dict[str, Any]]:
    """Every Config field in order: name, type, default, meaning, valid values."""
    out = []
    for f in dataclasses.fields(Config):
        if f.name == "extra":
            continue
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append({"name": f.name, "type": t, "default": f.default,
                    "doc": f.metadata.get("doc"), "valid": f.metadata.get("valid"),
                    "choices": f.metadata.get("choices")})
    return out


@dataclass
class Config:
    """Configuration of an IMP / SWAMP run: every field with its default, meaning and valid
    values is in the reference (``field_docs()`` gives the same table). Values are checked at
    construction: types here, ranges and combinations by the C++ core's ``validate_config`` (the
    check C++ users get too); a bad value raises ``ValueError`` / ``TypeError`` naming the field.

    ``Config(model="conv4_small", method="swamp", particles=4, rounds=8, prune_ratio=0.5)``
    """

    model: str = _doc(
        "lenet_300_100", "a model of the zoo, by name (``swamp_ext.models.names()``); "
        "``run_imp(model=module)`` trains your own module instead",
        "a name in ``swamp_ext.models.names()``")
    method: str = _doc(
        "swamp", "``imp`` (1 particle, no SWA), ``imp_swa`` (1 particle with SWA), ``swamp`` "
        "(``particles`` particles with SWA, averaged), ``swamp_plus`` (1 particle for the first "
        "``single_particle_rounds`` rounds, then ``particles``)", "one of the four",
        choices=METHODS)
    particles: int = _doc(4, "particles per round (SWAMP, SWAMP+); IMP methods train one",
                          ">= 1")
    rounds: int = _doc(5, "pruning rounds; round 0 trains the dense network, each later round "
                          "prunes first", ">= 1")
    prune_ratio: float = _doc(0.2, "fraction of the remaining weights removed each round",
                              "(0, 1)")
    epochs: int = _doc(10, "epochs a round trains, counted from the initialisation (a round "
                           "trains from the rewind point to here)", ">= 1")
    rewind_epochs: int = _doc(1, "the ticket: the weights after this many epochs of dense "
                                 "training; every round restarts there", "[0, epochs)")
    rewind_steps: Optional[int] = _doc(None, "the ticket by steps instead of epochs (None: use "
                                             "``rewind_epochs``)",
                                       "None or [0, total steps)")
    batch_size: int = _doc(128, "training batch size (an epoch is len(train) // batch_size "
                                "full batches)", ">= 1")
    lr: float = _doc(0.1, "peak learning rate of the main phase", "> 0")
    momentum: float = _doc(0.9, "SGD momentum (pruned weights' momentum stays zero)", "[0, 1)")
    nesterov: bool = _doc(False, "Nesterov momentum", "needs momentum > 0")
    weight_decay: float = _doc(5e-4, "L2 weight decay (never applied to pruned weights)", ">= 0")
    schedule: str = _doc("cosine", "learning rate of the main phase: ``cosine`` (to ``swa_lr``, "
                                   "or 0 without SWA), ``step`` (/10 at 1/2, /100 at 3/4) or "
                                   "``constant``", "one of the three", choices=SCHEDULES)
    warmup_epochs: float = _doc(0.0, "linear warm-up to ``lr`` over this many epochs",
                                "[0, epochs), ends before SWA starts")
    swa_start: float = _doc(0.75, "SWA starts at epoch floor(swa_start x epochs) and averages "
                                  "the weights at the end of every epoch from then on",
                            "(0, 1), at least one epoch before it")
    swa_lr: float = _doc(0.05, "the constant learning rate of the SWA phase", "> 0")
    use_swa: Optional[bool] = _doc(None, "force SWA on (True) or off (False); None: the "
                                         "method's default (off for ``imp`` only)",
                                   "None, True or False")
    single_particle_rounds: int = _doc(2, "``swamp_plus``: rounds trained with one particle "
                                          "before ``particles``", ">= 0")
    keep_first_last_dense: bool = _doc(False, "keep the first and the last prunable layer dense",
                                       "bool")
    pruning: str = _doc("global", "how a round's mask shrinks: ``global`` magnitude over all "
                                  "prunable weights (the method), ``layerwise`` magnitude, "
                                  "``random`` positions at global magnitude's layer densities "
                                  "(the control), or an N:M pattern such as ``2:4``: in every "
                                  "group of M weights along a layer's rows the N largest of the "
                                  "round's average are kept, one fewer per group each round "
                                  "from M:M (prune_ratio unused; layers whose rows are not "
                                  "whole groups of M stay dense, ``Result.dense_layers``)",
                        "global, layerwise, random, or N:M with 1 <= N < M <= 256 and "
                        "rounds >= M - N + 1",
                        choices=("global", "layerwise", "random", "2:4"))
    seed: int = _doc(0, "seeds the initialisation, the batch orders (hashed per round and "
                        "particle), augmentation and your model's dropout", "[0, 2**64)")
    device: str = _doc("cpu", "where training runs: ``cpu``, ``cuda`` (the current CUDA "
                              "device) or ``cuda:N``", "cpu, cuda, cuda:N")
    eval_batch_size: int = _doc(1000, "batch size of evaluation passes", ">= 1")
    bn_batch_size: int = _doc(0, "batch size of the batch-norm recompute (0: ``batch_size``)",
                              ">= 0")
    deterministic: bool = _doc(False, "CUDA: torch's deterministic algorithms for the run "
                                      "(needs CUBLAS_WORKSPACE_CONFIG); CPU runs are bitwise "
                                      "reproducible at a fixed thread count anyway", "bool")
    augment: bool = _doc(False, "random crop (``crop_padding``) and horizontal flip of image "
                                "batches, per sample, from the particle's generator", "bool")
    crop_padding: int = _doc(4, "zero padding of the random crop", ">= 0")
    flip: bool = _doc(True, "``augment`` flips horizontally too", "bool")
    particle_mode: str = _doc("auto", "how a round's particles train: ``stacked`` (one model "
                                      "holding all of them), ``sequential``, ``threads`` (CPU: "
                                      "side by side, one thread each) or ``auto`` (the faster "
                                      "here); all agree to float rounding", "one of the four",
                              choices=("auto", "stacked", "sequential", "threads"))
    sparse_kernels: str = _doc("auto", "CPU sparse kernels for pruned layers: ``auto`` (layers "
                                       "at or below the densities below), ``on`` or ``off``",
                               "auto, on, off", choices=("auto", "on", "off"))
    sparse_density: float = _doc(0.5, "``auto``: linear layers at or below this density run "
                                      "sparse", "[0, 1]")
    sparse_conv_density: float = _doc(0.1, "``auto``: convolutions at or below this density run "
                                           "sparse", "[0, 1]")
    precision: str = _doc("fp32", "``fp32``, or mixed precision: ``bf16`` / ``fp16`` forward "
                                  "and loss under autocast, fp32 master weights; ``fp16`` "
                                  "scales the loss dynamically", "fp32, bf16, fp16",
                          choices=("fp32", "bf16", "fp16"))
    diagnostics: bool = _doc(True, "per-particle figures of every round: each particle's "
                                   "batch-norm recompute and evaluation and the particles' "
                                   "prediction ensemble (``RoundRecord.particle_*``, "
                                   "``ensemble_*``); False skips them: the average, its figures "
                                   "and the masks are the same, the round is cheaper", "bool")
    channels_last: Union[str, bool] = _doc(
        "auto", "training forwards compute convolutions in the channels-last (NHWC) memory "
                "order: 4-D inputs and conv weights are NHWC copies inside the forward, while "
                "the weights, masks and everything stored keep the contiguous (logical) order; "
                "``auto`` turns it on for conv models in mixed precision on a GPU or on a CPU "
                "with bf16 instructions (``Result.channels_last`` says what the run picked)",
        "auto, True, False", choices=("auto", True, False))
    sync_batchnorm: bool = _doc(False, "a particle trained data-parallel by several processes "
                                       "(more processes than particles) computes its batch-norm "
                                       "statistics over the whole batch, reduced over its "
                                       "processes every step, as torch.nn.SyncBatchNorm "
                                       "(zoo models and the nn.BatchNorm layers of your module); "
                                       "off: each process's own shard, as DDP", "bool")
    data_parallel: str = _doc("auto", "with more processes than a round has particles: "
                                      "``always`` trains each particle on a group of processes "
                                      "(each its shard of every batch, gradients summed every "
                                      "step), ``never`` on one process (the others sit the round "
                                      "out), ``auto`` data parallel only where a process's share "
                                      "of a step computes enough per parameter to pay for "
                                      "summing the gradients (swamp_ext.distributed."
                                      "data_parallel_choice)", "auto, always, never",
                              choices=("auto", "always", "never"))
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
                     "pruning", "precision", "data_parallel"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise TypeError(f"Config.{name} must be a string, got {type(v).__name__}")
        for name in ("nesterov", "keep_first_last_dense", "deterministic", "augment", "flip",
                     "diagnostics", "sync_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Config.{name} must be a bool")
        if not (isinstance(self.channels_last, bool) or self.channels_last == "auto"):
            raise _fail("channels_last", f"must be 'auto', True or False, got "
                                         f"{self.channels_last!r}")
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
        """The fields as a plain dict (what results.json stores)."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def fields(cls) -> list[str]:
        """The field names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """A Config from a dict of fields; unknown keys raise ValueError naming them."""
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ValueError(f"unknown Config field(s): {', '.join(unknown)}")
        return cls(**d)

    def to_cpp(self) -> Any:
        """The same configuration as the C++ core's ``_C.Config``."""
        c = _C.Config()
        for name in self.fields():
            v = getattr(self, name)
            if name == "rewind_steps":
                v = -1 if v is None else v
            elif name == "use_swa":
                v = -1 if v is None else int(v)
            elif name == "channels_last":
                v = v if v == "auto" else ("true" if v else "false")
            setattr(c, name, v)
        return c
