"""Particles spread over processes with torch.distributed (launched by ``torchrun``).

Each process trains a contiguous share of every round's particles; the C++ core all-gathers the
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

import os
from dataclasses import dataclass
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
    name = getattr(process_group, "group_name", None)
    if not name:
        name = dist.distributed_c10d._get_process_group_name(process_group)
    return Group(name=name, rank=dist.get_rank(process_group), size=size)
