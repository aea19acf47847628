"""Readers for datasets in their standard on-disk formats. Every error names the file and what was
expected; nothing is downloaded."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import pickle
import stat
import zlib
from typing import IO, Any, Optional

import numpy as np
import torch

__all__ = ["ImageFiles", "decoded_bytes", "image_folder_files", "list_image_folder", "read_cifar",
           "read_idx_dataset", "read_image_folder"]


def _open_regular(path: str) -> IO[bytes]:
    """Opens `path` for reading only if it is a regular file: a FIFO, a device (/dev/zero) or a
    folder is refused before a byte is read, never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot open ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise ValueError(f"{path} is {kind}, not a regular file; it was not read")
    return os.fdopen(fd, "rb")


def _find(root: str, candidates: list[str], what: str) -> str:
    for c in candidates:
        p = os.path.join(root, c)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{what}: none of {', '.join(candidates)} found in {root}")


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds: dicts, lists, strings, bytes, numbers and numpy
    arrays. Any other global (os.system, builtins.eval, ...) is refused before it is looked up,
    so a crafted file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol-5 pickles
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles made by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} (a CIFAR batch holds only dicts, lists, bytes "
                "and numpy arrays; nothing else is loaded, nothing is executed)")
        return super().find_class(module, name)


def _unpickle(path: str) -> dict:
    with _open_regular(path) as f:
        try:
            d = _CifarUnpickler(f, encoding="bytes").load()
        except Exception as e:
            raise ValueError(f"{path} is not a CIFAR python pickle ({type(e).__name__}: "
                             f"{str(e)[:200]})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict with b'data' and labels, "
                         f"got {type(d).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _labels(path: str, key: str, value: Any, n: int, classes: int) -> np.ndarray:
    """Class labels as int64, refused unless they are integers (not bools, not floats) in
    [0, classes), one per image."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{path}: '{key}' must be a list of integer labels, got "
                         f"{type(value).__name__}")
    try:
        y = np.asarray(value)
    except Exception as e:
        raise ValueError(f"{path}: '{key}' is not an array of labels ({e})") from None
    if y.dtype == np.bool_ or y.dtype.kind not in "iu":
        raise ValueError(f"{path}: '{key}' must hold integer class labels, got {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{path}: {n} images but '{key}' has shape {list(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"{path}: '{key}' has labels in [{int(y.min())}, {int(y.max())}], "
                         f"expected [0, {classes - 1}]")
    return y.astype(np.int64)


def _cifar_batch(path: str, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise ValueError(f"{path}: expected keys 'data' and '{label_key}', found "
                         f"{sorted(map(str, d))[:10]}")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072] (32x32 RGB planes), "
                         f"got {desc}")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: holds no images")
    y = _labels(path, label_key, d[label_key], x.shape[0], classes)
    return np.ascontiguousarray(x).reshape(-1, 3, 32, 32), y


def _label_names(path: str, key: str, classes: int) -> list[str]:
    names = _unpickle(path).get(key)
    if not isinstance(names, (list, tuple)) or len(names) != classes:
        got = (f"{len(names)} names" if isinstance(names, (list, tuple))
               else type(names).__name__)
        raise ValueError(f"{path}: '{key}' must list the {classes} class names, got {got}")
    out = []
    for n in names:
        if isinstance(n, bytes):
            try:
                n = n.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: '{key}' holds a name that is not UTF-8 text") from None
        if not isinstance(n, str) or not n:
            raise ValueError(f"{path}: '{key}' must hold non-empty strings, got {n!r}"[:200])
        out.append(n)
    return out


def read_cifar(root: str, which: str, label_mode: str = "fine") -> dict[str, Any]:
    """CIFAR-10 / CIFAR-100 python-version folders. Returns uint8 [N, 3, 32, 32] RGB arrays."""
    if which == "cifar10":
        folder = _find(root, ["cifar-10-batches-py", "."], "cifar10")
        if not os.path.exists(os.path.join(folder, "data_batch_1")):
            raise FileNotFoundError(f"cifar10: {os.path.join(folder, 'data_batch_1')} is missing "
                                    "(expected the python version: data_batch_1..5, test_batch)")
        classes = 10
        parts = [_cifar_batch(os.path.join(folder, f"data_batch_{i}"), "labels", classes)
                 for i in range(1, 6)]
        x_tr = np.concatenate([p[0] for p in parts])
        y_tr = np.concatenate([p[1] for p in parts])
        x_te, y_te = _cifar_batch(os.path.join(folder, "test_batch"), "labels", classes)
        names: Optional[list[str]] = None
        meta = os.path.join(folder, "batches.meta")
        if os.path.exists(meta):
            names = _label_names(meta, "label_names", classes)
    else:
        if label_mode not in ("fine", "coarse"):
            raise ValueError(f"cifar100: label_mode must be 'fine' or 'coarse', got {label_mode!r}")
        folder = _find(root, ["cifar-100-python", "."], "cifar100")
        key = f"{label_mode}_labels"
        classes = 100 if label_mode == "fine" else 20
        x_tr, y_tr = _cifar_batch(os.path.join(folder, "train"), key, classes)
        x_te, y_te = _cifar_batch(os.path.join(folder, "test"), key, classes)
        names = None
        meta = os.path.join(folder, "meta")
        if os.path.exists(meta):
            names = _label_names(meta, f"{label_mode}_label_names", classes)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
            "num_classes": classes, "classes": names}


# gzip's deflate cannot expand data more than about 1032 times: a header declaring more than
# that for the file's size is refused before anything is inflated.
_MAX_DEFLATE_RATIO = 1032


def read_idx(path: str, ndim: Optional[int] = None, count: Optional[int] = None,
             count_from: str = "") -> np.ndarray:
    """One IDX file of unsigned bytes, gzipped or not, read as a stream: the header is checked
    first (magic, `ndim` dimensions, `count` items, sizes the file can hold), then exactly the
    declared bytes are read, and the file must end there. Every error names the file."""
    with _open_regular(path) as raw:
        size = os.fstat(raw.fileno()).st_size
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            return _read_idx_stream(path, f, size, gz, ndim, count, count_from)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: broken gzip stream ({type(e).__name__}: {e})") from None


def _read_idx_stream(path: str, f: IO[bytes], size: int, gz: bool, ndim: Optional[int],
                     count: Optional[int], count_from: str) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic 0x0000080N expected)")
    nd = head[3]
    if nd == 0 or (ndim is not None and nd != ndim):
        raise ValueError(f"{path}: IDX header has {nd} dimensions, expected "
                         f"{ndim if ndim is not None else 'at least 1'}")
    dims_raw = f.read(4 * nd)
    if len(dims_raw) < 4 * nd:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(nd)]
    if any(d == 0 for d in dims):
        raise ValueError(f"{path}: IDX header declares an empty array {dims}")
    if count is not None and dims[0] != count:
        raise ValueError(f"{path}: {dims[0]} items, but {count_from or 'its companion'} has "
                         f"{count}")
    n = math.prod(dims)  # Python integers: no overflow
    limit = (size * _MAX_DEFLATE_RATIO + 4096) if gz else size - 4 - 4 * nd
    if n > limit:
        raise ValueError(f"{path}: header says {dims} ({n} bytes) but the file "
                         f"({size} bytes{', gzipped' if gz else ''}) cannot hold them "
                         "(truncated or corrupt)")
    try:
        data = bytearray(n)
    except MemoryError:
        raise ValueError(f"{path}: not enough memory for the {n} bytes its header declares") \
            from None
    view, got = memoryview(data), 0
    while got < n:
        k = f.readinto(view[got: got + (1 << 24)])  # type: ignore[attr-defined]
        if not k:
            break
        got += k
    left = n - got
    if left > 0:
        raise ValueError(f"{path}: header says {dims} ({n} bytes) but only {n - left} bytes "
                         "follow (truncated or corrupt)")
    if f.read(1):
        raise ValueError(f"{path}: more bytes follow the {dims} ({n} bytes) its header declares "
                         "(corrupt)")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def read_idx_dataset(root: str, name: str) -> dict[str, Any]:
    """MNIST / Fashion-MNIST IDX files in `root` (or root/raw), gzipped or not. Labels are read
    first: the image file must then hold exactly as many images."""
    def file(stem: str) -> str:
        cands = [stem, stem + ".gz", os.path.join("raw", stem), os.path.join("raw", stem + ".gz")]
        return _find(root, cands, name)

    out: dict[str, Any] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = file(f"{prefix}-labels-idx1-ubyte")
        raw_y = read_idx(labels, ndim=1)
        y = _labels(labels, "labels", raw_y, raw_y.shape[0], 10)
        x = read_idx(file(f"{prefix}-images-idx3-ubyte"), ndim=3, count=y.shape[0],
                     count_from=labels)
        out[f"x_{split}"] = x[:, None]
        out[f"y_{split}"] = y
    out["num_classes"] = 10
    out["classes"] = None
    return out


_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


def _decode_one(path: str, size: Optional[int]) -> np.ndarray:
    """One image file as uint8 [3, H, W] RGB (resized to size x size when given)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("imagefolder needs Pillow: pip install 'swamp_ext[datasets]'") from None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None:
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise ValueError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _same_size(path: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{path}: image is {a.shape[2]}x{a.shape[1]} but earlier ones are "
                         f"{shape[2]}x{shape[1]}; pass image_size=N to resize")


def _decode(paths: list[str], size: Optional[int]) -> np.ndarray:
    arrays: list[np.ndarray] = []
    for p in paths:
        a = _decode_one(p, size)
        if arrays:
            _same_size(p, a, arrays[0].shape)
        arrays.append(a)
    return np.stack(arrays)


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded when asked for (the streamed image folder): (uint8 [3, H, W], label).
    Every image must have the first one's size unless ``image_size`` resizes them all."""

    def __init__(self, paths: list[str], labels: list[int], classes: list[str],
                 image_size: Optional[int], shape: Optional[tuple[int, ...]] = None) -> None:
        self.paths = list(paths)
        self.labels = list(labels)
        self.targets = self.labels
        self.classes = list(classes)
        self.image_size = image_size
        self.shape = shape or tuple(_decode_one(self.paths[0], image_size).shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = _decode_one(self.paths[i], self.image_size)
        _same_size(self.paths[i], a, self.shape)
        return torch.from_numpy(a), self.labels[i]


def _class_folder(folder: str, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for i, c in enumerate(classes):
        d = os.path.join(folder, c)
        if not os.path.isdir(d):
            continue
        for dirpath, _, files in sorted(os.walk(d)):
            for f in sorted(files):
                if f.lower().endswith(_IMG_EXT):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(i)
    return paths, labels


def list_image_folder(root: str) -> tuple[list[str], list[str], list[int], list[str], list[int]]:
    """(classes, train paths, train labels, test paths, test labels) of an image folder:
    root/train/<class>/... and root/val (or test)/<class>/..., or Tiny-ImageNet's
    val/images + val/val_annotations.txt."""
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        raise FileNotFoundError(
            f"imagefolder: {train} is missing (expected root/train/<class>/...)")
    classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    if len(classes) < 2:
        raise ValueError(f"imagefolder: {train} needs at least 2 class folders, found {classes}")
    tr_paths, tr_labels = _class_folder(train, classes)
    te_paths: list[str] = []
    te_labels: list[int] = []
    val = next((os.path.join(root, s) for s in ("val", "test")
                if os.path.isdir(os.path.join(root, s))), None)
    if val is None:
        raise FileNotFoundError(f"imagefolder: neither {root}/val nor {root}/test exists")
    ann = os.path.join(val, "val_annotations.txt")
    if os.path.exists(ann):  # Tiny-ImageNet: val/images/*.JPEG + a table of labels
        index = {c: i for i, c in enumerate(classes)}
        with open(ann) as f:
            for n, line in enumerate(f, 1):
                cols = line.strip().split("\t")
                if len(cols) < 2 or cols[1] not in index:
                    raise ValueError(f"{ann}:{n}: expected '<file>\\t<class>' with a class of "
                                     f"{train}, got {line.strip()!r}")
                te_paths.append(os.path.join(val, "images", cols[0]))
                te_labels.append(index[cols[1]])
    else:
        te_paths, te_labels = _class_folder(val, classes)
    if not tr_paths or not te_paths:
        raise ValueError(f"imagefolder: no images found under {train} or {val} "
                         f"(extensions {', '.join(_IMG_EXT)})")
    return classes, tr_paths, tr_labels, te_paths, te_labels


Listing = tuple[list[str], list[str], list[int], list[str], list[int]]


def image_folder_files(root: str, image_size: Optional[int] = None,
                       listing: Optional[Listing] = None) -> tuple[ImageFiles, ImageFiles]:
    """The image folder as two datasets decoding each image when asked for (streaming).
    ``listing``: the folder's ``list_image_folder(root)`` when already made."""
    classes, tr_paths, tr_labels, te_paths, te_labels = listing or list_image_folder(root)
    train = ImageFiles(tr_paths, tr_labels, classes, image_size)
    return train, ImageFiles(te_paths, te_labels, classes, image_size, train.shape)


def decoded_bytes(root: str, image_size: Optional[int] = None,
                  listing: Optional[Listing] = None) -> int:
    """Bytes the decoded image folder takes in memory (uint8, the first image's size)."""
    _, tr_paths, _, te_paths, _ = listing or list_image_folder(root)
    c, h, w = _decode_one(tr_paths[0], image_size).shape
    return (len(tr_paths) + len(te_paths)) * c * h * w


def read_image_folder(root: str, image_size: Optional[int] = None,
                      listing: Optional[Listing] = None) -> dict[str, Any]:
    """Class-per-folder images (train/ and val/ or test/), decoded once and cached."""
    classes, tr_paths, tr_labels, te_paths, te_labels = listing or list_image_folder(root)
    key = hashlib.sha256(repr((tr_paths, te_paths, image_size)).encode()).hexdigest()[:16]
    cache = os.path.join(root, f".swamp_cache_{key}.safetensors")
    signature = _folder_signature(tr_paths + te_paths, image_size)
    out = _read_cache(cache, signature, classes, tr_labels, te_labels)
    if out is not None:
        return out
    out = {"x_train": torch.from_numpy(_decode(tr_paths, image_size)),
           "y_train": torch.tensor(tr_labels, dtype=torch.int64),
           "x_test": torch.from_numpy(_decode(te_paths, image_size)),
           "y_test": torch.tensor(te_labels, dtype=torch.int64),
           "num_classes": len(classes), "classes": classes}
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise ValueError("imagefolder: train and val images differ in size; pass image_size=N")
    try:
        from ._core import _C

        _C.io.save_safetensors(
            cache, {k: out[k] for k in ("x_train", "y_train", "x_test", "y_test")},
            {"format": _CACHE_FORMAT, "signature": signature, "classes": json.dumps(classes)})
    except (OSError, ValueError, RuntimeError):
        pass  # a read-only dataset folder: no cache, decode every time
    return out


_CACHE_FORMAT = "swamp_ext-imagefolder-cache-1"


def _folder_signature(paths: list[str], image_size: Optional[int]) -> str:
    """What the decoded images depend on: every file's path, size and modification time."""
    h = hashlib.sha256(repr(image_size).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _read_cache(cache: str, signature: str, classes: list[str], tr_labels: list[int],
                te_labels: list[int]) -> Optional[dict[str, Any]]:
    """The decoded folder from its cache (a safetensors file: tensors only, no code), or None
    when there is none or it does not match the folder as it is now (files added, removed,
    resized or touched; labels, classes or shapes that differ): then the images are decoded
    again."""
    if not os.path.isfile(cache):
        return None
    from ._core import _C

    try:
        tensors, meta = _C.io.load_safetensors(cache)
    except (ValueError, RuntimeError):
        return None
    if meta.get("format") != _CACHE_FORMAT or meta.get("signature") != signature:
        return None
    try:
        if json.loads(meta.get("classes", "null")) != classes:
            return None
    except ValueError:
        return None
    x_tr, x_te = tensors.get("x_train"), tensors.get("x_test")
    y_tr, y_te = tensors.get("y_train"), tensors.get("y_test")
    if x_tr is None or x_te is None or y_tr is None or y_te is None:
        return None
    for x, n in ((x_tr, len(tr_labels)), (x_te, len(te_labels))):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] != n or x.shape[1] != 3:
            return None
    if x_tr.shape[1:] != x_te.shape[1:] or min(x_tr.shape[2:]) < 1:
        return None
    if not (torch.equal(y_tr, torch.tensor(tr_labels, dtype=torch.int64))
            and torch.equal(y_te, torch.tensor(te_labels, dtype=torch.int64))):
        return None
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
            "num_classes": len(classes), "classes": classes}
