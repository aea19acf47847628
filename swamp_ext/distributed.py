"""Particles spread over processes with torch.distributed (launched by ``torchrun``).

Each process trains a contiguous share of every round's particles. With more processes than a
round has particles, each particle is trained data-parallel by a group of P // n processes (IMP's
single particle, and the ticket, by all of them): each computes its shard of every batch, the
group sums the gradients every step (gloo on CPU, NCCL on CUDA) and every member makes the same
masked step. The C++ core all-gathers the
particles' solutions, evaluation outputs and losses through the process group and sums them in
particle order, so every process computes the same average, figures and next mask as one process
holding all particles. Only rank 0 writes results and checkpoints; every rank resumes from them
(the checkpoint folder must be the same for all, e.g. on a shared file system across nodes)::

    torchrun --standalone --nproc_per_node=2 -m swamp_ext run --particles 4 --out runs/x
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29400 --rdzv_id=job1 -m swamp_ext run --device cuda ...

Inside your own torchrun script ``run_imp(cfg, data)`` uses the default process group once
``torch.distributed.init_process_group`` has run (or pass ``process_group=``); give each process
its own device in ``cfg.device`` (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

import torch

DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Group:
    """The process group a run is spread over."""

    name: str  # as registered in c10d (the C++ core resolves it by this name)
    rank: int
    size: int
    # the ProcessGroup itself (subgroups are made from it), and whether it is the default group
    group: Any = field(default=None, compare=False, repr=False)
    world: bool = True

    @property
    def primary(self) -> bool:
        """Whether this is rank 0 of the group (the process that writes results)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init_from_env(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Joins the job torchrun started (the default process group, gloo for CPU tensors and NCCL
    for CUDA ones) unless already joined, and returns this process's device: ``cuda:LOCAL_RANK``
    for a CUDA device, else ``device``."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or timeout_s <= 0:
        raise ValueError(f"dist timeout must be > 0 seconds, got {timeout_s!r}")
    cuda = str(device).startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} has no CUDA device "
                             f"({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo",
                                timeout=timedelta(seconds=float(timeout_s)))
    return device


def leave() -> None:
    """Leaves the job's default process group (torch.distributed.destroy_process_group), as a
    torchrun process should before it exits."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve(process_group: Any) -> Optional[Group]:
    """The group a run is spread over: None (the default group when torch.distributed is
    initialized with more than one process), False (never), or a ProcessGroup."""
    if process_group is False:
        return None
    import torch.distributed as dist

    if process_group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        process_group = dist.group.WORLD
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("process_group given but torch.distributed is not initialized")
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError("process_group must be a torch.distributed ProcessGroup, None or False, "
                        f"got {type(process_group).__name__}")
    size = dist.get_world_size(process_group)
    if size == 1:
        return None
    return Group(name=_name(process_group), rank=dist.get_rank(process_group), size=size,
                 group=process_group,
                 world=dist.get_world_size() == size)


def _name(process_group: Any) -> str:
    import torch.distributed as dist

    name = getattr(process_group, "group_name", None)
    return name or dist.distributed_c10d._get_process_group_name(process_group)


# Data parallel pays where a process's share of a step computes long enough to hide summing the
# gradients: its multiply-adds per parameter per step (its shard of the batch x the model's
# multiply-adds per sample / its parameters) at least this many. Measured on 2 processes of one
# thread (benchmarks/distributed.py, AMD EPYC): lenet_300_100 (32 per step) 3x slower data
# parallel, conv4_small on 28x28 digits (656) 1.6x faster.
DATA_PARALLEL_MIN_REUSE = 128.0


def gradient_sync_stats(reset: bool = False) -> dict[str, float]:
    """What this process's gradient all-reduces cost in data-parallel steps since the last reset.

    The gradients of a data-parallel step travel in buckets while backward goes on (as
    DistributedDataParallel's reducer sends them: the last layers' first, the first bucket of 1
    MiB, the others up to 25 MiB). Keys: ``steps``, ``buckets``, ``bytes`` (sent), ``in_flight_s``
    (the time some bucket's sum was travelling: the union of the buckets' start-to-done
    intervals) and ``blocked_s`` (the time the training thread waited for them: after backward,
    or in a collective that cannot run in the background). ``in_flight_s - blocked_s`` is the
    communication hidden behind backward. ``reset=True`` starts counting afresh (after reading).
    """
    from . import _C

    return dict(_C.ops.gradient_sync_stats(reset))


def macs_per_parameter(config: Any, input_shape: Any, num_classes: int,
                       model: Any = None) -> Optional[float]:
    """Multiply-adds of one sample's forward pass per parameter of the model (the zoo's
    ``config.model``, or the ``_ModuleAdapter`` of your module); None when it cannot be counted
    (inputs that are not one tensor). A zoo model is counted once per process."""
    if model is None:
        return _zoo_macs_per_parameter(config.model, tuple(input_shape), num_classes)
    return _count_macs_per_parameter(lambda: model.copy().cpu(), input_shape)


@functools.cache
def _zoo_macs_per_parameter(name: str, input_shape: tuple, num_classes: int) -> Optional[float]:
    from .torch_models import build

    return _count_macs_per_parameter(lambda: build(name, list(input_shape), num_classes),
                                     input_shape)


def _count_macs_per_parameter(make: Any, input_shape: Any) -> Optional[float]:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        module = make()
        module.eval()
        params = sum(p.numel() for p in module.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(1, *input_shape))
        flops = counter.get_total_flops()
    except Exception:  # noqa: BLE001 - structured inputs, an unusual module: not counted
        return None
    return flops / 2.0 / params if params else None


def data_parallel_choice(config: Any, input_shape: Any, num_classes: int, world: int,
                         model: Any = None) -> tuple[bool, str]:
    """Whether rounds of fewer particles than ``world`` processes train each particle data
    parallel (Config.data_parallel; ``auto``: the rule above), and why, in words."""
    if config.data_parallel != "auto":
        return config.data_parallel == "always", f"Config.data_parallel={config.data_parallel}"
    from ._core import _C

    n = min(_C.particles_per_round(config.to_cpp()) + [1])  # the ticket is one particle
    if n >= world:
        return True, "no round has fewer particles than processes"
    reuse = macs_per_parameter(config, input_shape, num_classes, model)
    if reuse is None:
        return True, "auto: the model's cost could not be counted; data parallel"
    shard = config.batch_size / (world // n)
    per_step = shard * reuse
    pays = per_step >= DATA_PARALLEL_MIN_REUSE
    return pays, (f"auto: {per_step:.0f} multiply-adds per parameter per process step "
                  f"({'>=' if pays else '<'} {DATA_PARALLEL_MIN_REUSE:.0f}): "
                  f"{'data parallel' if pays else 'one process per particle'}")


def describe_layout(world: int, config: Any, data_parallel: bool = True) -> str:
    """How a run's rounds spread over ``world`` processes, in words: e.g. "2 processes; rounds of
    1 particle: 2 processes per particle (data parallel); rounds of 4: 2 particles per process"."""
    from ._core import _C

    counts = sorted(set(_C.particles_per_round(config.to_cpp())))
    parts = []
    for n in counts:
        groups = _C.data_parallel_groups(world, n) if data_parallel or n >= world else \
            [[p] for p in range(n)]
        what = f"rounds of {n} particle{'s' if n > 1 else ''}: "
        if n >= world:
            what += f"{n / world:g} particles per process" if n % world == 0 else \
                f"{n // world} or {n // world + 1} particles per process"
        else:
            idle = world - sum(len(g) for g in groups)
            g = len(groups[0])
            what += f"{g} processes per particle (data parallel)" if g > 1 else \
                "1 process per particle"
            if idle:
                what += f", {idle} idle"
        parts.append(what)
    return f"{world} processes; " + "; ".join(parts)


def data_parallel_subgroups(group: Group, config: Any, timeout_s: float = DEFAULT_TIMEOUT_S,
                            particles: Optional[list[int]] = None, data_parallel: bool = True
                            ) -> list[tuple[list[int], str]]:
    """The process groups of the processes that train one particle together (data parallel
    inside a particle: a round of n < P particles on P processes, groups of P // n; see
    ``_C.data_parallel_groups``), made with ``torch.distributed.new_group`` by every process
    (as c10d wants) for every particle count the run's rounds have. Returns the (ranks, name) of
    those this process is in, for the C++ core. A group of one process, or of all of them, needs
    none (the run's own group serves). particles: of each round (the run's plan)."""
    import torch.distributed as dist

    from ._core import _C

    if not data_parallel:
        return []
    if particles is None:  # the run's plan gives them; asked of the core otherwise
        particles = _C.particles_per_round(config.to_cpp())
    counts = sorted({1} | set(particles))
    wanted = []
    for n in counts:
        if n >= group.size:
            continue
        for ranks in _C.data_parallel_groups(group.size, n):
            if 1 < len(ranks) < group.size and ranks not in wanted:
                wanted.append(ranks)
    if not wanted:
        return []
    if not group.world:
        raise ValueError(
            f"process_group: a round of fewer particles than its {group.size} processes trains "
            "each particle on a group of them, and torch.distributed makes such groups only "
            "with every process of the default group; pass the default group (or None), or "
            "run as many processes as the rounds have particles")
    out = []
    for ranks in wanted:  # the same calls in the same order in every process
        sub = dist.new_group(ranks, timeout=timedelta(seconds=float(timeout_s)))
        if group.rank in ranks:
            out.append((list(ranks), _name(sub)))
    return out
