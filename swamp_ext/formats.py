"""Readers for datasets in their standard on-disk formats. Every error names the file and what was
expected; nothing is downloaded."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["read_cifar", "read_idx_dataset", "read_image_folder"]


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
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except Exception as e:
        raise ValueError(f"{path} is not a CIFAR python pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict with b'data' and labels")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(path: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise ValueError(f"{path}: expected keys 'data' and '{label_key}', found {sorted(d)}")
    x = np.asarray(d["data"])
    y = np.asarray(d[label_key], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072] (32x32 RGB planes), "
                         f"got {x.dtype} {list(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
    return x.reshape(-1, 3, 32, 32), y


def read_cifar(root: str, which: str, label_mode: str = "fine") -> dict[str, Any]:
    """CIFAR-10 / CIFAR-100 python-version folders. Returns uint8 [N, 3, 32, 32] RGB arrays."""
    if which == "cifar10":
        folder = _find(root, ["cifar-10-batches-py", "."], "cifar10")
        if not os.path.exists(os.path.join(folder, "data_batch_1")):
            raise FileNotFoundError(f"cifar10: {os.path.join(folder, 'data_batch_1')} is missing "
                                    "(expected the python version: data_batch_1..5, test_batch)")
        parts = [_cifar_batch(os.path.join(folder, f"data_batch_{i}"), "labels")
                 for i in range(1, 6)]
        x_tr = np.concatenate([p[0] for p in parts])
        y_tr = np.concatenate([p[1] for p in parts])
        x_te, y_te = _cifar_batch(os.path.join(folder, "test_batch"), "labels")
        classes = 10
        names: Optional[list[str]] = None
        meta = os.path.join(folder, "batches.meta")
        if os.path.exists(meta):
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in _unpickle(meta).get("label_names", [])]
    else:
        if label_mode not in ("fine", "coarse"):
            raise ValueError(f"cifar100: label_mode must be 'fine' or 'coarse', got {label_mode!r}")
        folder = _find(root, ["cifar-100-python", "."], "cifar100")
        key = f"{label_mode}_labels"
        x_tr, y_tr = _cifar_batch(os.path.join(folder, "train"), key)
        x_te, y_te = _cifar_batch(os.path.join(folder, "test"), key)
        classes = 100 if label_mode == "fine" else 20
        names = None
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
            "num_classes": classes, "classes": names}


def _open_maybe_gz(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: broken gzip stream ({e})") from None
    return raw


def read_idx(path: str) -> np.ndarray:
    """One IDX file (uint8 data), gzipped or not."""
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic 0x0000080N expected)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims)) if dims else 0
    data = raw[4 + 4 * ndim :]
    if len(data) != n:
        raise ValueError(f"{path}: header says {dims} ({n} bytes) but {len(data)} bytes follow "
                         "(truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def read_idx_dataset(root: str, name: str) -> dict[str, Any]:
    """MNIST / Fashion-MNIST IDX files in `root` (or root/raw), gzipped or not."""
    def file(stem: str) -> str:
        cands = [stem, stem + ".gz", os.path.join("raw", stem), os.path.join("raw", stem + ".gz")]
        return _find(root, cands, name)

    out: dict[str, Any] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(file(f"{prefix}-images-idx3-ubyte"))
        y = read_idx(file(f"{prefix}-labels-idx1-ubyte"))
        if x.ndim != 3:
            raise ValueError(f"{name}: {prefix}-images must be [N, H, W], got {list(x.shape)}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} {prefix} images but labels of shape "
                             f"{list(y.shape)}")
        out[f"x_{split}"] = x[:, None]
        out[f"y_{split}"] = y.astype(np.int64)
    out["num_classes"] = 10
    out["classes"] = None
    return out


_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


def _decode(paths: list[str], size: Optional[int]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("imagefolder needs Pillow: pip install 'swamp_ext[datasets]'") from None
    arrays = []
    shape = None
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except Exception as e:
            raise ValueError(f"{p}: cannot decode image ({type(e).__name__}: {e})") from None
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"{p}: image is {a.shape[1]}x{a.shape[0]} but earlier ones are "
                             f"{shape[1]}x{shape[0]}; pass image_size=N to resize")
        arrays.append(a.transpose(2, 0, 1))
    return np.stack(arrays)


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


def read_image_folder(root: str, image_size: Optional[int] = None) -> dict[str, Any]:
    """Class-per-folder images (train/ and val/ or test/), decoded once and cached."""
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
    key = hashlib.sha256(repr((tr_paths, te_paths, image_size)).encode()).hexdigest()[:16]
    cache = os.path.join(root, f".swamp_cache_{key}.pt")
    if os.path.exists(cache):
        try:  # tensors, ints and strings only: weights_only refuses anything that runs code
            cached = torch.load(cache, weights_only=True)
            if isinstance(cached, dict) and cached.get("classes") == classes:
                return cached
        except Exception:
            pass  # unreadable or foreign cache: decode again
    out = {"x_train": torch.from_numpy(_decode(tr_paths, image_size)),
           "y_train": torch.tensor(tr_labels, dtype=torch.int64),
           "x_test": torch.from_numpy(_decode(te_paths, image_size)),
           "y_test": torch.tensor(te_labels, dtype=torch.int64),
           "num_classes": len(classes), "classes": classes}
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise ValueError("imagefolder: train and val images differ in size; pass image_size=N")
    try:
        tmp = cache + ".tmp"
        torch.save(out, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only dataset folder: no cache, decode every time
    return out
