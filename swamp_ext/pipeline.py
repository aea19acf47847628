"""Any map-style ``torch.utils.data.Dataset`` as the data of a run (``datasets.from_torch``).

The C++ core keeps owning the batch orders: it draws every particle's permutation (hashed per
seed, round and particle; saved in checkpoints) and, before each epoch, announces the batches the
particle will ask for (``BatchSource::expect``); before each pass in storage order (batch-norm
statistics, evaluation) it announces the pass. This module fetches exactly those batches through
one ``DataLoader`` whose batch sampler yields the announced batches, so that its worker processes
(persistent, started before training) fetch ahead while the core steps, with pinned memory for a
GPU. Requests that were not announced are served directly.

Random transforms are reproducible: each sample is fetched with torch's CPU generator, Python's
``random`` and numpy's global generator seeded from the batch's key (the particle's order stream,
i.e. (seed, round, particle), the epoch and the batch) and the sample's place in the batch, and
the caller's generator states are put back afterwards. So a run gives the same batches with 0, 1
or more workers, a resumed run the same as an uninterrupted one, and a process that fetches only
its shard of a batch (data parallel inside a particle) the samples the whole batch holds.
"""

from __future__ import annotations

import functools
import hashlib
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

__all__ = ["TorchData"]

_MASK64 = (1 << 64) - 1
_SCAN_STREAM = 0x5CA7


def _mix(*parts: int) -> int:
    """splitmix64 over the parts: unrelated seeds for neighbouring keys."""
    h = 0
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


@dataclass(frozen=True)
class _Task:
    """One batch to fetch: `indices` of split `split`, random transforms seeded with `seed`."""

    split: str  # "train" | "bn" | "test"
    seed: int
    indices: tuple[int, ...]
    offset: int = 0  # the place of indices[0] in its batch (a shard of it: data parallel)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {tuple(x.shape)} {x.dtype} tensor"
    return type(x).__module__ + "." + type(x).__qualname__


class _Samples(torch.utils.data.Dataset):
    """The run's datasets behind one index space (picklable: it goes to the worker processes).

    ``__getitems__`` fetches a whole ``_Task`` with seeded generators, checks every sample and
    returns ``(x, y)``: inputs stacked (float32, or uint8 images kept uint8; structured inputs
    stacked leaf by leaf), labels int64. ``layout``: what every input must look like (that of the
    first training sample, see ``_layout``)."""

    def __init__(self, splits: dict[str, Any], names: dict[str, str],
                 num_classes: Optional[int], layout: Any = None) -> None:
        self.splits = splits
        self.names = names
        self.num_classes = num_classes
        self.layout = layout

    def __len__(self) -> int:  # not used for sampling (the core draws the orders)
        return len(self.splits["train"])

    def __getitem__(self, task: _Task) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__(task)

    def __getitems__(self, task: _Task) -> tuple[torch.Tensor, torch.Tensor]:
        states = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        try:
            data = self.splits[task.split]
            xs, ys = [], []
            for k, i in enumerate(task.indices):
                seed = _mix(task.seed, task.offset + k)
                torch.default_generator.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed & 0xFFFFFFFF)
                x, y = self.check(task.split, i, data[i])
                xs.append(x)
                ys.append(y)
        finally:
            torch.set_rng_state(states[0])
            random.setstate(states[1])
            np.random.set_state(states[2])
        return _stack(xs), torch.tensor(ys, dtype=torch.int64)

    def check(self, split: str, i: int, sample: Any) -> tuple[torch.Tensor, int]:
        where = f"{self.names[split]} sample {i}"
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TypeError(f"{where}: expected an (input, label) pair, got {_describe(sample)}")
        x, y = sample
        if isinstance(x, (tuple, list)):
            x = type(x)(_leaf(f"{where}: input {k}", v, structured=True) for k, v in enumerate(x))
        elif isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise TypeError(f"{where}: dict inputs need string keys (keyword arguments of "
                                f"forward), got {sorted(map(repr, x))}")
            x = {k: _leaf(f"{where}: input '{k}'", v, structured=True) for k, v in x.items()}
        else:
            x = _leaf(f"{where}: the input", x, structured=False)
        if self.layout is not None and _layout(x) != self.layout:
            raise ValueError(f"{where}: the input is {_show(_layout(x))}, expected "
                             f"{_show(self.layout)} like the first training sample")
        label = _label(where, y)
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise ValueError(f"{where}: label {label} is out of range [0, {self.num_classes})")
        return x, label


def _leaf(what: str, x: Any, structured: bool) -> torch.Tensor:
    """One input tensor, checked: float (as float32; finite) or uint8 images; integer tensors
    too inside structured inputs (token ids, lengths)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        hint = ("; add a transform that makes a tensor (e.g. torchvision's ToTensor / "
                "PILToTensor)" if type(x).__module__.startswith("PIL") else "")
        raise TypeError(f"{what} is {_describe(x)}; expected a tensor (or a tuple / list / dict "
                        f"of tensors){hint}")
    if x.is_floating_point():
        x = x.to(torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{what} contains NaN or infinite values")
    elif x.dtype != torch.uint8 and not (structured and x.dtype != torch.bool
                                         and not x.is_complex()):
        raise TypeError(f"{what} is {x.dtype}; expected floating point or uint8 images")
    return x


def _layout(x: Any) -> Any:
    """Shapes and dtypes of an input (nested like it)."""
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype)
    if isinstance(x, dict):
        return {k: _layout(v) for k, v in x.items()}
    return type(x)(_layout(v) for v in x)


def _is_tensor_layout(layout: Any) -> bool:
    return isinstance(layout, tuple) and len(layout) == 2 and isinstance(layout[1], torch.dtype)


def _show(layout: Any) -> str:
    if _is_tensor_layout(layout):
        return f"{layout[0]} {str(layout[1]).replace('torch.', '')}"
    if isinstance(layout, dict):
        return "{" + ", ".join(f"{k!r}: {_show(v)}" for k, v in layout.items()) + "}"
    inner = ", ".join(_show(v) for v in layout)
    return f"({inner})" if isinstance(layout, tuple) else f"[{inner}]"


def _stack(xs: list[Any]) -> Any:
    """A batch of inputs: tensors stacked, structured inputs stacked leaf by leaf."""
    first = xs[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(xs)
    if isinstance(first, dict):
        return {k: torch.stack([x[k] for x in xs]) for k in first}
    return type(first)(torch.stack([x[i] for x in xs]) for i in range(len(first)))


def _label(where: str, y: Any) -> int:
    if isinstance(y, torch.Tensor):
        if y.numel() != 1:
            raise ValueError(f"{where}: the label must be one integer, got {_describe(y)}")
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"{where}: the label must be an integer, got a {y.dtype} tensor")
        return int(y.reshape(-1)[0])
    if isinstance(y, np.ndarray):
        if y.size != 1:
            raise ValueError(f"{where}: the label must be one integer, got a {y.shape} array")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"{where}: the label must be an integer, got a {y.dtype} array")
        return int(y.reshape(-1)[0])
    if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)):
        raise TypeError(f"{where}: the label must be an integer, got {_describe(y)} ({y!r})")
    return int(y)


class _Plan:
    """The announced batches, handed to the DataLoader as its batch sampler: each iterator
    yields the tasks of one segment (fixed when the iterator is made)."""

    def __init__(self) -> None:
        self.segment: list[_Task] = []

    def __iter__(self) -> Iterator[_Task]:
        return iter(list(self.segment))

    def __len__(self) -> int:
        return len(self.segment)


@dataclass
class TorchData:
    """A pair of map-style torch Datasets for ``run_imp`` (made by ``datasets.from_torch``)."""

    name: str
    train: Any = field(repr=False)
    test: Any = field(repr=False)
    num_classes: int
    layout: Any  # shapes and dtypes of one sample's input (nested for tuple / dict inputs)
    num_workers: int = 0
    pin_memory: Optional[bool] = None
    prefetch_factor: int = 2
    timeout: float = 0.0
    bn_data: Any = field(default=None, repr=False)
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    classes: Optional[tuple[str, ...]] = None
    # the last run's data figures: batches served ahead (announced) and directly, and the seconds
    # the training steps waited for their batches
    stats: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.train)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape; () for structured inputs."""
        return self.layout[0] if _is_tensor_layout(self.layout) else ()

    @property
    def structured(self) -> bool:
        """Whether the inputs are a tuple / list / dict of tensors (own modules only)."""
        return not _is_tensor_layout(self.layout)

    def _samples(self) -> _Samples:
        splits = {"train": self.train, "test": self.test,
                  "bn": self.bn_data if self.bn_data is not None else self.train}
        names = {"train": f"{self.name}: training", "test": f"{self.name}: test",
                 "bn": f"{self.name}: training" if self.bn_data is None else
                 f"{self.name}: batch-norm"}
        return _Samples(splits, names, self.num_classes, self.layout)

    def feeder(self, device: str) -> _Feeder:
        return _Feeder(self, device)

    def first_inputs(self, n: int) -> Any:
        """The first n training inputs (seeded as in a storage-order pass)."""
        n = min(n, len(self.train))
        return self._samples().__getitems__(_Task("bn", _mix(_SCAN_STREAM, 0, 0),
                                                  tuple(range(n))))[0]


class _Feeder:
    """Serves the C++ PyBatchSource (csrc/python/py_batch_source.h): the announced batches through
    the DataLoader, in announcement order (interleaved by batch across the particles of a
    group), anything else directly."""

    def __init__(self, data: TorchData, device: str) -> None:
        self.data = data
        self.samples = data._samples()
        self.train_size = len(data.train)
        self.test_size = len(data.test)
        self.num_classes = data.num_classes
        self.input_shape = list(data.input_shape)
        self.mean = list(data.mean or ())
        self.std = list(data.std or ())
        self.fingerprint = _fingerprint(data, self.samples)
        self.lock = threading.RLock()
        self.plan = _Plan()
        pin = data.pin_memory if data.pin_memory is not None else \
            torch.device(device).type == "cuda"
        workers = data.num_workers
        self.loader = DataLoader(
            self.samples, batch_sampler=self.plan, num_workers=workers,
            collate_fn=_identity, pin_memory=pin, timeout=data.timeout,
            prefetch_factor=data.prefetch_factor if workers > 0 else None,
            persistent_workers=workers > 0, generator=torch.Generator(),
        )
        self.announced: list[tuple[tuple[int, int], Any, _Task]] = []  # (order, key, task)
        self.pending: deque[Any] = deque()  # keys of the current iterator, in its order
        self.ready: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        self.it: Optional[Iterator[Any]] = None
        self.seq = 0
        self.stats = data.stats
        self.stats.clear()
        self.stats.update(train_wait_s=0.0, train_batches=0, announced=0, direct=0)
        self.test_y = torch.full((self.test_size,), -1, dtype=torch.int64)
        self.test_seen = 0

    # ---- announcements ---------------------------------------------------------------------
    def start(self, ignore_signals: tuple[int, ...] = ()) -> None:
        """Starts the worker processes (before the core's threads run); they ignore
        ``ignore_signals`` (the run's stop signals: the main process acts on them)."""
        with self.lock:
            if self.data.num_workers > 0 and self.it is None:
                if ignore_signals:
                    self.loader.worker_init_fn = functools.partial(
                        _worker_init, tuple(int(s) for s in ignore_signals))
                self.plan.segment = []
                self.it = iter(self.loader)

    def expect(self, stream: int, epoch: int, first: int, end: int, perm: torch.Tensor,
               batch_size: int, shard_begin: int = 0, shard_end: int = -1) -> None:
        """Batches [first, end) of the epoch; of each, samples [shard_begin, shard_end) (all when
        shard_end < 0), the part this process computes in a data-parallel group."""
        order = perm.tolist()
        stop = batch_size if shard_end < 0 else shard_end
        with self.lock:
            for b in range(first, end):
                idx = tuple(order[b * batch_size + shard_begin:b * batch_size + stop])
                self.announce((b, self.next_seq()), ("train", stream, epoch, b, shard_begin),
                              _Task("train", _mix(stream, epoch, b), idx, shard_begin))

    def begin_scan(self, split: str, batch_size: int, end: int, begin: int = 0) -> None:
        which = "bn" if split == "train" else "test"
        with self.lock:
            for k, s in enumerate(range(begin, end, batch_size)):
                idx = tuple(range(s, min(s + batch_size, end)))
                self.announce((k, self.next_seq()), (which, s, len(idx)),
                              _Task(which, _mix(_SCAN_STREAM, 1 if which == "test" else 0, s),
                                    idx))

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def announce(self, order: tuple[int, int], key: Any, task: _Task) -> None:
        self.announced.append((order, key, task))

    # ---- requests --------------------------------------------------------------------------
    def train_batch(self, stream: int, epoch: int, batch: int, indices: torch.Tensor,
                    offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples `indices`, at `offset` in their batch (a shard of it, or all)."""
        t0 = time.perf_counter()
        key = ("train", stream, epoch, batch, offset)
        got = self.take(key)
        if got is None:
            got = self.direct(_Task("train", _mix(stream, epoch, batch),
                                    tuple(indices.cpu().tolist()), offset))
        self.stats["train_wait_s"] += time.perf_counter() - t0
        self.stats["train_batches"] += 1
        return got

    def train_inputs(self, begin: int, length: int) -> tuple[Any, None]:
        key = ("bn", begin, length)
        got = self.take(key)
        if got is None:
            got = self.direct(_Task("bn", _mix(_SCAN_STREAM, 0, begin),
                                    tuple(range(begin, begin + length))))
        return got[0], None

    def test_batch(self, begin: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("test", begin, length)
        got = self.take(key)
        if got is None:
            got = self.direct(_Task("test", _mix(_SCAN_STREAM, 1, begin),
                                    tuple(range(begin, begin + length))))
        with self.lock:
            part = self.test_y[begin:begin + length]
            self.test_seen += int((part < 0).sum())
            part.copy_(got[1])
        return got

    def test_labels(self) -> torch.Tensor:
        if self.test_seen < self.test_size:
            size = 1024
            self.begin_scan("test", size, self.test_size)
            for s in range(0, self.test_size, size):
                self.test_batch(s, min(size, self.test_size - s))
        return self.test_y.clone()

    def direct(self, task: _Task) -> tuple[torch.Tensor, torch.Tensor]:
        with self.lock:
            return self.samples.__getitems__(task)

    def take(self, key: Any) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """The announced batch `key` (None: not announced), pulling the iterator up to it."""
        with self.lock:
            if key in self.ready:
                self.stats["announced"] += 1
                return self.ready.pop(key)
            if key not in self.pending:
                if not any(k == key for _, k, _ in self.announced):
                    self.stats["direct"] += 1
                    return None
                self.new_segment()
            self.stats["announced"] += 1
            while True:
                k = self.pending.popleft()
                try:
                    got = next(self.it)
                except BaseException:
                    self.pending.clear()
                    self.ready.clear()
                    raise
                if k == key:
                    return got
                self.ready[k] = got

    def new_segment(self) -> None:
        """An iterator over everything announced so far, by batch across the announcements."""
        todo = sorted(self.announced, key=lambda a: a[0])
        self.announced = []
        self.ready.clear()
        self.pending = deque(k for _, k, _ in todo)
        self.plan.segment = [t for _, _, t in todo]
        self.it = iter(self.loader)

    def close(self) -> None:
        with self.lock:
            it, self.it = self.it, None
            self.pending.clear()
            self.ready.clear()
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def _identity(batch: Any) -> Any:
    return batch


def _worker_init(signals: tuple[int, ...], worker_id: int) -> None:
    from .stopping import ignore_in_worker

    ignore_in_worker(signals)


def _fingerprint(data: TorchData, samples: _Samples) -> str:
    """Identifies the data for checkpoints: classes, sizes, shape, and a hash of a few samples of
    each split fetched with fixed seeds (not the whole data: that would be a pass per run)."""
    h = hashlib.sha256()
    parts = ["torch dataset", f"train {len(data.train)}", f"test {len(data.test)}",
             f"classes {data.num_classes}", f"shape {tuple(data.input_shape)}",
             f"layout {_show(data.layout)}", f"norm {data.mean} {data.std}",
             f"bn {'own' if data.bn_data is not None else 'train'}"]
    for split, d in (("train", data.train), ("test", data.test)):
        n = len(d)
        idx = tuple(sorted({0, n - 1, *(n * k // 7 for k in range(1, 7))}))
        x, y = samples.__getitems__(_Task(split, _mix(_SCAN_STREAM, 2), idx))
        for leaf in (x.values() if isinstance(x, dict) else
                     x if isinstance(x, (tuple, list)) else (x,)):
            h.update(leaf.contiguous().numpy().tobytes())
        h.update(y.numpy().tobytes())
    parts.append("samples " + h.hexdigest()[:32])
    return "; ".join(parts)
