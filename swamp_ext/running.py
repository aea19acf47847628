"""run_imp: the IMP / SWAMP run in the C++ core, with results as plain Python objects."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import Any, Callable, Optional, Union

import torch

from . import distributed as _distributed
from ._core import _C
from .config import Config
from .datasets import Dataset
from .errors import RunStopped
from .module_checks import check_module_on_data
from .modules import Prunable, _ModuleAdapter
from .pipeline import TorchData
from .precision import warn_precision
from .progress import TerminalProgress
from .results import Result, RoundModels, RoundRecord, TrainingDivergedError
from .run_folder import rounds as _rounds
from .run_folder.lock import RunFolderLock
from .run_folder.write import results_json, write_json
from .stopping import DEFAULT_STOP_SIGNALS, SignalSpec, StopOnSignals, resolve_signals

__all__ = ["plan_of", "run_imp"]

_log = logging.getLogger("swamp_ext")


def run_imp(
    config: Config,
    data: Union[Dataset, TorchData],
    *,
    on_round: Optional[Callable[[RoundRecord], None]] = None,
    progress: Union[bool, None, Callable[[Any], None]] = None,
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: int = 1,
    checkpoint_every_steps: int = 0,
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
    force: bool = False,
    stop_signals: SignalSpec = DEFAULT_STOP_SIGNALS,
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
      every round, after every particle, every ``checkpoint_every`` epochs, every
      ``checkpoint_every_steps`` steps (0: off; for long epochs: a resume continues mid-epoch),
      on Ctrl-C and on a stop signal, and ``results.json`` after every round. Calling again
      with the same config resumes where it stopped, giving bitwise the same result on the CPU.
      A checkpoint of another config is refused (the error names the fields) unless
      ``fresh=True``; only ``rounds`` may grow.
      One run writes a folder at a time: the run holds ``DIR/.swamp.lock`` (host, pid, start
      time) and a second one raises ``FolderInUseError`` naming the holder at once. A lock left
      by a dead process of this host is taken over; one naming another host only with
      ``force=True``. Under torchrun checkpoints are written at round ends only.
    on_ticket: called with the ticket's state dict (the rewind point) once it exists.
    on_models: called after each round's evaluation with a ``RoundModels``: the particles'
      solutions (SWA averages with their batch-norm statistics), the averaged final model and the
      masks the round trained under (copies; costs a copy of every model per round).
    stop_signals: signals that save and stop the run at the next step boundary (default
      SIGTERM and SIGUSR1: a scheduler's preemption or warning; None: none): ``RunStopped`` is
      raised, a ``SystemExit`` with status 75 (``errors.STOPPED_EXIT_STATUS``) that a scheduler
      can requeue on; the same call resumes bitwise. Handlers are installed for the run's
      duration from the main thread only; data-loading workers ignore these signals.
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
    if isinstance(checkpoint_every_steps, bool) or not isinstance(checkpoint_every_steps, int) \
            or checkpoint_every_steps < 0:
        raise ValueError("checkpoint_every_steps must be an int >= 0, got "
                         f"{checkpoint_every_steps!r}")
    signals = resolve_signals(stop_signals)
    if isinstance(loss_sync_every, bool) or not isinstance(loss_sync_every, int) \
            or loss_sync_every < 0:
        raise ValueError(f"loss_sync_every must be an int >= 0, got {loss_sync_every!r}")
    group = _distributed.resolve(process_group)
    if isinstance(dist_timeout, bool) or not isinstance(dist_timeout, (int, float)) \
            or not dist_timeout > 0:
        raise ValueError(f"dist_timeout must be > 0 seconds, got {dist_timeout!r}")
    primary = group is None or group.primary
    warn_precision(config)
    cfg = config.to_cpp()
    adapter = None
    if model is not None:
        adapter = _ModuleAdapter(model, device=config.device, prunable=prunable, loss_fn=loss_fn)
        cfg.model = adapter.identity
        check_module_on_data(adapter, config, data)
    elif isinstance(data, TorchData) and data.structured:
        raise ValueError(f"data: {data.name} gives tuple / dict inputs; the zoo models take one "
                         "input tensor: pass your module as run_imp(..., model=module)")
    elif prunable is not None or loss_fn is not None:
        raise ValueError("prunable= and loss_fn= apply to a run given model=module; zoo models "
                         "prune their conv / linear weights with cross-entropy")
    # the request: everything the run is given, as one object; its plan is decided once by the
    # core (the configuration validated, particles per round, channels_last, the device)
    request = _C.RunRequest(cfg, list(data.input_shape), data.num_classes, adapter)
    plan = request.plan()
    ckpt = ""
    if checkpoint_dir is not None:
        ckpt = os.fspath(checkpoint_dir)
        _C.ensure_writable_dir(ckpt, "checkpoint_dir")
    if progress is None:
        progress = sys.stderr.isatty() and primary
    bar = None
    if progress is True:
        bar = TerminalProgress(plan.particles)
        request.hooks.on_epoch = bar
    elif callable(progress):
        request.hooks.on_epoch = progress

    records: list[RoundRecord] = []
    kept: dict[int, Any] = {}
    channels_last = plan.channels_last

    def keep_cb(rm: Any) -> None:
        rm = RoundModels(rm.round, rm.particles, rm.average, rm.masks)
        if keep_rounds:
            if not ckpt:
                kept[rm.round] = _rounds.round_tensors(rm, keep_particles)
            elif primary:  # the run folder is shared: rank 0 writes it
                _rounds.write_round(ckpt, rm, keep_particles)
        if on_models is not None:
            on_models(rm)

    def write_results() -> None:
        if ckpt and primary:
            path = os.path.join(ckpt, "results.json")
            write_json(path, results_json(config, data.name, records, adapter,
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

    hooks = request.hooks
    hooks.on_round, hooks.on_restore, hooks.on_ticket = round_cb, restore_cb, on_ticket
    if keep_rounds or on_models is not None:
        hooks.on_models = keep_cb
    hooks.models_with_particles = on_models is not None or keep_particles
    hooks.loss_sync_every = loss_sync_every
    request.checkpoint.dir, request.checkpoint.every_epochs = ckpt, checkpoint_every
    request.checkpoint.every_steps = checkpoint_every_steps
    request.checkpoint.fresh = fresh
    if group is not None:
        dp, _ = _distributed.data_parallel_choice(config, data.input_shape, data.num_classes,
                                                  group.size, adapter)
        request.set_processes(group.name, float(dist_timeout),
                              _distributed.data_parallel_subgroups(group, config,
                                                                   float(dist_timeout),
                                                                   plan.particles, dp), dp)
    # one writer per run folder (under torchrun rank 0 holds it for the group)
    lock = RunFolderLock(ckpt, force=force) if ckpt and primary else contextlib.nullcontext()
    with lock:
        return _run_locked(request, data, config, records=records, bar=bar, kept=kept,
                           adapter=adapter, ckpt=ckpt, keep_rounds=keep_rounds,
                           signals=signals)


def _run_locked(request: Any, data: Any, config: Config, *, records: list, bar: Any, kept: dict,
                adapter: Any, ckpt: str, keep_rounds: bool,
                signals: tuple[signal.Signals, ...]) -> Result:
    """The run itself, its folder (if any) held."""
    feeder = _core_data(data, config.device, request)
    try:
        with StopOnSignals(signals, request):
            if feeder is not None:
                feeder.start(signals)  # worker processes start before the core's threads
            try:
                out = _C.run(request)
            except Exception as e:
                if request.stop_signal:
                    # saved at a step boundary (StopRequested), or, spread over processes, a
                    # collective cut short by another process that stopped first
                    stopped = RunStopped(request.stop_signal,
                                         signal.Signals(request.stop_signal).name, ckpt or None)
                    _log.warning("swamp_ext: %s", stopped)
                    raise stopped from (None if isinstance(e, _C.StopRequested) else e)
                if isinstance(e, RuntimeError) and str(e).startswith("training diverged"):
                    raise TrainingDivergedError(str(e), list(records)) from None
                raise
    finally:
        if feeder is not None:
            feeder.close()
        if bar is not None:
            bar.round_done(None)
    masks, state, channels_last = out.masks, out.state, out.channels_last
    return Result(
        config=config, dataset=data.name, rounds=records, masks=dict(masks), _state=dict(state),
        input_shape=data.input_shape, num_classes=data.num_classes, _adapter=adapter,
        _run_dir=ckpt if keep_rounds and ckpt else None, _kept=kept,
        channels_last=bool(channels_last),
    )


def plan_of(config: Config, input_shape: Any, num_classes: int,
            model: Optional[_ModuleAdapter] = None) -> Any:
    """What a run of ``config`` on data of ``input_shape`` / ``num_classes`` will do, decided by
    the core once (``_C.RunPlan``: particles of each round, SWA, what ``channels_last`` resolves
    to, the device resolved); raises ValueError naming the field for a configuration out of
    range."""
    cfg = config.to_cpp()
    if model is not None:
        cfg.model = model.identity
    return _C.RunRequest(cfg, list(input_shape), int(num_classes), model).plan()


def _core_data(data: Union[Dataset, TorchData], device: str, request: Any) -> Optional[Any]:
    """Gives ``data`` to the request: a TorchData's feeder (returned, to start before the core's
    threads) or the dataset's tensors (None returned)."""
    if isinstance(data, TorchData):
        request.feeder = data.feeder(device)
        return request.feeder
    request.set_tensors(data.x_train, data.y_train, data.x_test, data.y_test,
                        list(data.mean or ()), list(data.std or ()))
    return None
