"""run_imp: the IMP / SWAMP run in the C++ core, with results as plain Python objects."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union

import torch

from . import _C
from . import distributed as _distributed
from . import runs as _runs
from .config import Config
from .datasets import Dataset
from .modules import Prunable, _logits, _ModuleAdapter, call_module
from .pipeline import TorchData, _layout, _show

__all__ = ["RoundModels", "RoundRecord", "Result", "TrainingDivergedError", "run_imp"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf. ``rounds`` holds the rounds completed before it happened."""

    def __init__(self, message: str, rounds: list[RoundRecord]) -> None:
        super().__init__(message)
        self.rounds = rounds


@dataclass
class RoundRecord:
    """Figures of one round (its final, averaged model unless stated)."""

    round: int
    particles: int
    sparsity: float  # exact, over the weights eligible for pruning
    sparsity_all: float  # over all conv / linear weights
    remaining: int
    prunable: int
    test_acc: float
    test_nll: float
    # the particles' prediction ensemble and each particle's own figures; None and [] when
    # Config.diagnostics is off
    ensemble_acc: Optional[float]
    ensemble_nll: Optional[float]
    particle_acc: list[float]
    particle_nll: list[float]
    layer_density: dict[str, float]
    train_loss: float
    seconds: float
    # expected calibration error (15 equal-width confidence bins) of the final model and of the
    # particles' ensemble; None in rounds recorded before swamp_ext computed it
    test_ece: Optional[float] = None
    ensemble_ece: Optional[float] = None
    # precision="fp16": particle steps skipped because their gradients overflowed
    skipped_steps: int = 0
    # the round's process layout: the processes of the run, and how many trained each particle
    # together (data parallel inside a particle; 1: each process its own particles)
    processes: int = 1
    processes_per_particle: int = 1

    @classmethod
    def _from_cpp(cls, r: Any) -> RoundRecord:
        return cls(
            round=r.round,
            particles=r.particles,
            sparsity=r.sparsity,
            sparsity_all=r.sparsity_all,
            remaining=r.remaining,
            prunable=r.prunable,
            test_acc=r.test_acc,
            test_nll=r.test_nll,
            ensemble_acc=None if math.isnan(r.ensemble_acc) else r.ensemble_acc,
            ensemble_nll=None if math.isnan(r.ensemble_nll) else r.ensemble_nll,
            particle_acc=list(r.particle_acc),
            particle_nll=list(r.particle_nll),
            layer_density=dict(r.layer_density),
            train_loss=r.train_loss,
            seconds=r.seconds,
            test_ece=None if math.isnan(r.test_ece) else r.test_ece,
            ensemble_ece=None if math.isnan(r.ensemble_ece) else r.ensemble_ece,
            skipped_steps=r.skipped_steps,
            processes=r.processes,
            processes_per_particle=r.processes_per_particle,
        )


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
        return load_run(run_dir, model=model)

    def round(self, k: int) -> _runs.RoundModel:
        """Round k: its record, masks, averaged model (``.to_torch()``) and, with
        ``keep_particles=True``, the particles' solutions."""
        rec = next((r for r in self.rounds if r.round == k), None)
        if rec is None:
            raise IndexError(f"round {k} is not in this run (rounds "
                             f"{[r.round for r in self.rounds]})")
        if k in self._kept:
            masks, state, parts = _runs.decode_round(*self._kept[k], f"round {k}")
        elif self._run_dir is not None:
            masks, state, parts = _runs.read_round(self._run_dir, k)
        else:
            raise ValueError(f"round {k} was not kept (run_imp(..., keep_rounds=False))")
        return _runs.RoundModel(rec, masks, state, parts, self._to_module)

    def _to_module(self, state: dict[str, torch.Tensor]) -> Optional[torch.nn.Module]:
        if self._adapter is not None:
            return self._adapter.to_module(state).eval()
        if self._identity is not None:
            raise ValueError("this run pruned your own module: load_run(DIR, model=module) "
                             "rebuilds it")
        from .models import to_torch

        return to_torch(self.config.model, state, self.input_shape, self.num_classes)

    @property
    def model(self) -> str:
        """What was pruned: the zoo model's name, or ``python:<module>.<class>``."""
        if self._adapter is not None:
            return self._adapter.identity
        return self._identity or self.config.model

    def to_torch(self) -> torch.nn.Module:
        """The final model as a plain ``torch.nn.Module`` (no swamp_ext needed to use it), in eval
        mode: for a run given ``model=module``, a copy of that module carrying the final weights.
        Inputs are what the model saw: for uint8 datasets, ``(x / 255 - mean) / std``."""
        return self._to_module(self._state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Final averaged weights and buffers, zeros where masked. For a run given
        ``model=module``, exactly the keys of ``module.state_dict()`` (loads with strict=True)."""
        if self._adapter is not None:
            return self._adapter.state_dict(self._state)
        return dict(self._state)

    def to_json(self) -> dict[str, Any]:
        """The content of ``results.json``: config, data, versions and every round record."""
        out = _results_json(self.config, self.dataset, self.rounds, self._adapter,
                            self.input_shape, self.num_classes, self.channels_last)
        if self.ensemble_of:
            out["ensemble_of"] = list(self.ensemble_of)
        return out

    def save(self, out_dir: Union[str, os.PathLike]) -> None:
        """Writes results.json and model.safetensors (weights, and masks as ``mask.<name>``)."""
        out_dir = os.fspath(out_dir)
        _C.ensure_writable_dir(out_dir, "output folder")
        write_json(os.path.join(out_dir, "results.json"), self.to_json())
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise ImportError(
                "saving weights needs safetensors: pip install 'swamp_ext[io]'"
            ) from None
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        tensors.update({f"mask.{k}": v.contiguous() for k, v in self.masks.items()})
        tmp = os.path.join(out_dir, "model.safetensors.tmp")
        save_file(tensors, tmp, metadata={"format": "swamp_ext", "model": self.model})
        os.replace(tmp, os.path.join(out_dir, "model.safetensors"))


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _TerminalProgress:
    """One self-overwriting status line on a terminal: round, particle, epoch, loss, the last
    round's accuracy and an estimate of the time left (from the epochs trained so far)."""

    def __init__(self, config: Optional[Config] = None, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.config = config
        self.per_particle = 0  # epochs a round's particle trains (learned from the first one)
        self.units = 0  # epochs trained in rounds by this process so far
        self.t_first: Optional[float] = None
        self.last_acc: Optional[float] = None
        self.width = 0

    def _left(self, p: Any) -> Optional[float]:
        """Seconds left: the rate of round epochs so far times the round epochs still to go."""
        if self.config is None or self.per_particle == 0 or self.units < 2:
            return None
        rate = (time.monotonic() - self.t_first) / (self.units - 1)
        left = (p.particles - p.particle - 1) * self.per_particle + (p.epochs - p.epoch)
        for k in range(p.round + 1, self.config.rounds):
            left += _C.particles_in_round(self.config.to_cpp(), k) * self.per_particle
        return rate * left

    def __call__(self, p: Any) -> None:
        if p.round >= 0:
            if self.per_particle == 0:
                self.per_particle = p.epochs - p.epoch + 1
                self.t_first = time.monotonic()
            self.units += 1
        who = (
            "ticket" if p.round < 0 else f"round {p.round} particle {p.particle + 1}/{p.particles}"
        )
        acc = "" if self.last_acc is None else f" | last acc {100 * self.last_acc:.2f}%"
        left = self._left(p) if p.round >= 0 else None
        eta = "" if left is None else f" | ETA {_clock(left)}"
        line = (f"[{_clock(time.monotonic() - self.t0)}] {who} epoch {p.epoch}/{p.epochs}"
                f" loss {p.loss:.4f} lr {p.lr:.4f}{acc}{eta}")
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def round_done(self, r: Optional[RoundRecord]) -> None:
        if r is not None:
            self.last_acc = r.test_acc
        self.stream.write("\r" + " " * max(self.width, 78) + "\r")
        self.stream.flush()


def _clock(s: float) -> str:
    s = max(0, int(s))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def run_imp(
    config: Config,
    data: Union[Dataset, TorchData],
    *,
    on_round: Optional[Callable[[RoundRecord], None]] = None,
    progress: Union[bool, None, Callable[[Any], None]] = None,
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: int = 1,
    fresh: bool = False,
    loss_sync_every: int = 0,
    on_ticket: Optional[Callable[[dict[str, torch.Tensor]], None]] = None,
    on_models: Optional[Callable[[RoundModels], None]] = None,
    model: Optional[torch.nn.Module] = None,
    prunable: Prunable = None,
    loss_fn: Optional[Callable[[Any, torch.Tensor], torch.Tensor]] = None,
    process_group: Any = None,
    dist_timeout: float = _distributed.DEFAULT_TIMEOUT_S,
    keep_rounds: bool = True,
    keep_particles: bool = False,
) -> Result:
    """Runs IMP / SWAMP as configured, entirely in the C++ core.

    model: prune this ``torch.nn.Module`` instead of the zoo model ``config.model``. The run
      starts from its weights (they are θ_0; the seed drives batch orders and augmentation) and
      trains copies: your module is not modified. Its ``forward`` runs as written, called from
      the C++ loop; it takes the input tensor and returns logits [batch, classes] (or an object
      with ``.logits``). Particles train one after the other, or stacked with
      ``torch.func.vmap`` where that gives the module's own outputs (particle_mode 'stacked',
      or 'auto' on a GPU).
    prunable: with ``model``: which parameters are pruned: a list of names, or a callable
      ``(name, param) -> bool``; default ``modules.default_prunable`` (Conv / Linear weights).
    loss_fn: with ``model``: ``loss_fn(output, target) -> scalar`` replaces cross-entropy in
      training (``output`` is what forward returned); accuracy / NLL are still reported.

    on_round: called with each RoundRecord as soon as the round is done.
    progress: None = a status line when stderr is a terminal; True / False force it on / off;
      a callable receives a progress object per epoch (round, particle, epoch, loss, lr).
    checkpoint_dir: write ``checkpoint.swamp`` there (atomically, with a checksum) at the end of
      every round, after every particle, every ``checkpoint_every`` epochs and on Ctrl-C, and
      ``results.json`` after every round. Calling again with the same config resumes where it
      stopped, giving bitwise the same result on the CPU. A checkpoint of another config is
      refused (the error names the fields) unless ``fresh=True``; only ``rounds`` may grow.
    on_ticket: called with the ticket's state dict (the rewind point) once it exists.
    on_models: called after each round's evaluation with a ``RoundModels``: the particles'
      solutions (SWA averages with their batch-norm statistics), the averaged final model and the
      masks the round trained under (copies; costs a copy of every model per round).
    loss_sync_every: read the training losses back from the device every this many steps (0:
      every step on the CPU, every 32 on a GPU); divergence is named at its exact step either way.

    process_group: spread each round's particles over the processes of a torch.distributed
      group (see swamp_ext.distributed): None uses the default group when torch.distributed is
      initialized with more than one process, False never spreads, or a ProcessGroup. Every
      process must be given the same config (its ``device`` aside), data and model; only rank 0
      writes ``checkpoint_dir`` (which must be the same folder for all) and every rank returns
      the same Result. Checkpoints are written at round ends only.
    dist_timeout: seconds a collective waits for the other processes before the run stops with
      an error (a process that died or hangs).
    keep_rounds: keep every round's averaged model and masks (bit-packed), in
      ``checkpoint_dir/rounds/`` or, without a folder, in the Result: ``result.round(k)``,
      ``load_run(checkpoint_dir)``. keep_particles: the particles' solutions too.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a swamp_ext.Config, got {type(config).__name__}")
    if isinstance(data, torch.utils.data.Dataset):
        raise TypeError(
            f"data is a torch Dataset ({type(data).__name__}): wrap the training and test sets "
            "with swamp_ext.datasets.from_torch(train, test, ...)"
        )
    if not isinstance(data, (Dataset, TorchData)):
        raise TypeError(
            "data must be a swamp_ext.datasets.Dataset (use datasets.load or "
            "datasets.from_arrays) or datasets.from_torch(train, test), got "
            f"{type(data).__name__}"
        )
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
            or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an int >= 0, got {checkpoint_every!r}")
    if isinstance(loss_sync_every, bool) or not isinstance(loss_sync_every, int) \
            or loss_sync_every < 0:
        raise ValueError(f"loss_sync_every must be an int >= 0, got {loss_sync_every!r}")
    group = _distributed.resolve(process_group)
    if isinstance(dist_timeout, bool) or not isinstance(dist_timeout, (int, float)) \
            or not dist_timeout > 0:
        raise ValueError(f"dist_timeout must be > 0 seconds, got {dist_timeout!r}")
    primary = group is None or group.primary
    _warn_precision(config)
    cfg = config.to_cpp()
    adapter = None
    if model is not None:
        adapter = _ModuleAdapter(model, device=config.device, prunable=prunable, loss_fn=loss_fn)
        cfg.model = adapter.identity
        _check_module_on_data(adapter, config, data)
    elif isinstance(data, TorchData) and data.structured:
        raise ValueError(f"data: {data.name} gives tuple / dict inputs; the zoo models take one "
                         "input tensor: pass your module as run_imp(..., model=module)")
    elif prunable is not None or loss_fn is not None:
        raise ValueError("prunable= and loss_fn= apply to a run given model=module; zoo models "
                         "prune their conv / linear weights with cross-entropy")
    ckpt = ""
    if checkpoint_dir is not None:
        ckpt = os.fspath(checkpoint_dir)
        _C.ensure_writable_dir(ckpt, "checkpoint_dir")
    if progress is None:
        progress = sys.stderr.isatty() and primary
    bar = None
    if progress is True:
        bar = _TerminalProgress(config)
        on_epoch = bar
    elif callable(progress):
        on_epoch = progress
    else:
        on_epoch = None

    records: list[RoundRecord] = []
    kept: dict[int, Any] = {}
    channels_last = bool(_C.channels_last_on(cfg, list(data.input_shape), data.num_classes,
                                             adapter))

    def keep_cb(rm: RoundModels) -> None:
        if keep_rounds:
            if not ckpt:
                kept[rm.round] = _runs.round_tensors(rm, keep_particles)
            elif primary:  # the run folder is shared: rank 0 writes it
                _runs.write_round(ckpt, rm, keep_particles)
        if on_models is not None:
            on_models(rm)

    models_cb = keep_cb if keep_rounds or on_models is not None else None

    def write_results() -> None:
        if ckpt and primary:
            path = os.path.join(ckpt, "results.json")
            write_json(path, _results_json(config, data.name, records, adapter,
                                           data.input_shape, data.num_classes, channels_last))

    def restore_cb(rounds: Any) -> None:
        records.extend(RoundRecord._from_cpp(r) for r in rounds)
        write_results()

    def round_cb(r: Any) -> None:
        rec = RoundRecord._from_cpp(r)
        records.append(rec)
        write_results()
        if bar is not None:
            bar.round_done(rec)
        if on_round is not None:
            on_round(rec)

    feeder, tensors = _core_data(data, config.device)
    try:
        if feeder is not None:
            feeder.start()  # worker processes start before the core's threads
        _, masks, state, channels_last = _C.run_imp(
            cfg, *tensors, data.num_classes, list(data.mean or ()), list(data.std or ()),
            round_cb, on_epoch, restore_cb, ckpt, checkpoint_every, fresh, loss_sync_every,
            on_ticket, None if models_cb is None else
            (lambda r, parts, avg, masks: models_cb(RoundModels(r, parts, avg, masks))),
            adapter, feeder, "" if group is None else group.name, float(dist_timeout),
            on_models is not None or keep_particles,
            [] if group is None else
            _distributed.data_parallel_subgroups(group, config, float(dist_timeout)),
        )
    except RuntimeError as e:
        if str(e).startswith("training diverged"):
            raise TrainingDivergedError(str(e), list(records)) from None
        raise
    finally:
        if feeder is not None:
            feeder.close()
        if bar is not None:
            bar.round_done(None)
    return Result(
        config=config, dataset=data.name, rounds=records, masks=dict(masks), _state=dict(state),
        input_shape=data.input_shape, num_classes=data.num_classes, _adapter=adapter,
        _run_dir=ckpt if keep_rounds and ckpt else None, _kept=kept,
        channels_last=bool(channels_last),
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AMX-BF16 or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _warn_precision(config: Config) -> None:
    import warnings

    if config.precision == "bf16" and config.device.startswith("cpu") \
            and not cpu_has_native_bf16():
        warnings.warn(
            "precision='bf16' on a CPU without bf16 instructions (no amx_bf16 / avx512_bf16; "
            f"torch's CPU capability: {torch.backends.cpu.get_cpu_capability()}): bf16 is "
            "emulated there and usually slower than fp32", RuntimeWarning, stacklevel=3)
    if config.precision == "fp16" and config.device.startswith("cpu"):
        warnings.warn("precision='fp16' on a CPU: fp16 convolutions and matrix products are "
                      "emulated there (many times slower than fp32); bf16 is the CPU's mixed "
                      "precision", RuntimeWarning, stacklevel=3)


def _core_data(data: Union[Dataset, TorchData], device: str) -> tuple[Optional[Any], tuple]:
    """What the core takes for ``data``: a TorchData's feeder (to start before the core's
    threads; None for tensors) and the four data tensors (empty for a feeder)."""
    if isinstance(data, TorchData):
        empty = torch.empty(0)
        return data.feeder(device), (empty, empty.long(), empty, empty.long())
    return None, (data.x_train, data.y_train, data.x_test, data.y_test)


def load_run(run_dir: Union[str, os.PathLike],
             model: Optional[torch.nn.Module] = None) -> Result:
    """The Result of a run folder (``run_imp(..., checkpoint_dir=DIR)``, ``swamp-ext run --out
    DIR``): config, every round's record, and with ``result.round(k)`` the kept round's masks
    and averaged model. A run that pruned your own module needs it back (``model=``) for
    ``to_torch``."""
    from . import strict

    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, "results.json")
    if not os.path.isdir(run_dir) or not os.path.lexists(path):
        raise FileNotFoundError(f"{run_dir}: not a swamp_ext run folder (no results.json)")
    # a regular file of bounded size, every field checked; one ValueError naming the field
    saved = strict.check_results(strict.read_json(path), path)
    cfg = dict(saved["config"])
    rounds = [RoundRecord(**r) for r in saved["rounds"]]
    if not rounds:
        raise ValueError(f"{path} holds no finished round")
    module_run = "module" in saved
    adapter, identity = None, None
    if module_run:
        identity = cfg.pop("model")
        cfg["model"] = Config().model  # the zoo field is not used by a module run
        if model is not None:
            adapter = _ModuleAdapter(model, device="cpu", prunable=None, loss_fn=None)
            if adapter.identity != identity:
                raise ValueError(f"{run_dir} pruned {identity}, the module given is "
                                 f"{adapter.identity}")
    elif model is not None:
        raise ValueError(f"{run_dir} pruned the zoo model {cfg.get('model')!r}; model= is for "
                         "runs of your own module")
    try:
        config = Config.from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: config: {e}") from None
    res = Result(config=config, dataset=saved.get("dataset", ""), rounds=rounds, masks={},
                 _state={}, input_shape=tuple(saved.get("input_shape", ())),
                 num_classes=int(saved.get("num_classes", 0)), _adapter=adapter,
                 _run_dir=run_dir, _identity=identity,
                 ensemble_of=[str(x) for x in saved.get("ensemble_of", [])],
                 channels_last=saved.get("channels_last"))
    if res.ensemble_of:  # the imp_ensemble baseline: figures only
        return res
    last = res.round(rounds[-1].round)  # the final model is the last round's average
    res.masks, res._state = last.masks, last.state
    return res


def _results_json(config: Config, dataset: str, rounds: list[RoundRecord],
                  adapter: Optional[_ModuleAdapter] = None, input_shape: Any = (),
                  num_classes: int = 0, channels_last: Optional[bool] = None
                  ) -> dict[str, Any]:
    cfg = config.to_dict()
    if adapter is not None:
        cfg["model"] = adapter.identity
    out = {
        "config": cfg, "dataset": dataset, "swamp_ext_version": _C.version(),
        "torch_version": torch.__version__, "input_shape": list(input_shape),
        "num_classes": num_classes,
        # what the test figures were computed in: evaluation never runs under autocast
        "evaluation_precision": "fp32",
    }
    if channels_last is not None:  # what Config.channels_last resolved to
        out["channels_last"] = channels_last
    if adapter is not None:
        out["module"] = adapter.describe()
    out["rounds"] = [asdict(r) for r in rounds]
    return out


def _model_inputs(data: Union[Dataset, TorchData], n: int, device: str) -> Any:
    """The first n training samples as the model sees them (no augmentation)."""
    if isinstance(data, TorchData) and data.structured:
        x = data.first_inputs(n)
        if isinstance(x, dict):
            return {k: v.to(device) for k, v in x.items()}
        return type(x)(v.to(device) for v in x)
    x = (data.first_inputs(n) if isinstance(data, TorchData) else data.x_train[:n]).to(device)
    if x.dtype == torch.uint8:
        x = x.float() / 255
    if data.mean:
        shape = (1, len(data.mean)) + (1,) * (x.dim() - 2)
        mean = torch.tensor(data.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(data.std, dtype=x.dtype, device=x.device).view(shape)
        x = (x - mean) / std
    return x


def _batch_size(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.shape[0]
    return _batch_size(next(iter(x.values())) if isinstance(x, dict) else x[0])


def _check_module_on_data(adapter: _ModuleAdapter, config: Config,
                          data: Union[Dataset, TorchData]) -> None:
    """Runs a copy of the module on a few samples before the run: its errors and its output
    named here, not deep in training; decides whether its particles can be stacked. Random
    draws of the module (dropout) leave the caller's generators as they were."""
    dev = torch.device(config.device)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        _check_module_forward(adapter, config, data)


def _check_module_forward(adapter: _ModuleAdapter, config: Config,
                          data: Union[Dataset, TorchData]) -> None:
    x = _model_inputs(data, 8, config.device)
    m = adapter.copy()
    who = adapter.class_name
    for train in (False, True):
        m.train(train)
        params = [(n, p, p._version) for n, p in m.named_parameters()]
        try:
            with torch.no_grad():
                out = call_module(m, x)
        except Exception as e:
            mode = "train" if train else "eval"
            raise RuntimeError(f"model: {who}.forward fails on a batch of {data.name} "
                               f"(inputs {_show(_layout(x))}, {mode} mode): "
                               f"{type(e).__name__}: {e}") from e
        now = dict(m.named_parameters())
        for n, p, v in params:
            if now.get(n) is not p:
                raise ValueError(f"model: {who}.forward replaces its parameter '{n}'; swamp_ext "
                                 "owns the weights during a run: compute with them, do not "
                                 "reassign them")
            if p._version != v:
                raise ValueError(f"model: {who}.forward changes its parameter '{n}' in place; "
                                 "swamp_ext owns the weights during a run: compute with them, "
                                 "do not modify them")
        logits = _logits(out)
        want = (_batch_size(x), data.num_classes)
        if tuple(logits.shape) != want:
            raise ValueError(f"model: {who} answers inputs {_show(_layout(x))} with "
                             f"{tuple(logits.shape)}; expected logits {want} ({data.name} has "
                             f"{data.num_classes} classes)")
        if not logits.is_floating_point():
            raise TypeError(f"model: {who} returns {logits.dtype} logits; expected floating point")
    most = max(_C.particles_in_round(config.to_cpp(), r) for r in range(config.rounds))
    wants_stacked = config.particle_mode == "stacked" or (
        config.particle_mode in ("auto", "threads") and torch.device(config.device).type != "cpu")
    if most > 1 and wants_stacked:
        reason = adapter.check_stacking(x, config.precision, config.channels_last)
        if reason is not None and config.particle_mode == "stacked":
            raise ValueError(f"Config.particle_mode 'stacked': the particles of {who} cannot be "
                             f"stacked: {reason}; use 'sequential' or 'auto'")
