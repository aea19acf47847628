"""Writing a run folder's results.json: atomically (a temporary file, fsync, rename)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import asdict
from typing import Any, Optional

import torch

from .._core import _C
from ..errors import FileWriteError


def make_folder(folder: str, for_file: str) -> None:
    """Creates ``folder`` (and its parents) for ``for_file``; FileWriteError naming both when it
    cannot be (a file in the way, permissions, a full disk)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        code = e.errno or 0
        why = e.strerror or str(e)
        where = f" ({e.filename} is in the way)" if code in (errno.EEXIST, errno.ENOTDIR) else ""
        raise FileWriteError(code, why, for_file, f"cannot write {for_file}: its folder {folder} "
                                                  f"cannot be created: {why}{where}") from None


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` to ``path`` through ``path.tmp`` (fsync, rename): a crash or a full disk
    leaves the previous file whole. Raises FileWriteError (an OSError) naming the file."""
    tmp = path + ".tmp"
    text = json.dumps(obj, indent=2)
    step = "open"
    try:
        with open(tmp, "w") as f:
            step = "write"
            f.write(text)
            f.flush()
            step = "fsync"
            os.fsync(f.fileno())
        step = "rename"
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        code = e.errno or 0
        why = e.strerror or str(e)
        full = " (disk full?)" if code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else ""
        raise FileWriteError(code, why, path, f"cannot write {path}: {step} failed: {why}{full}; "
                                              "the previous file, if any, is unchanged") from None


def results_json(config: Any, dataset: str, rounds: list[Any],
                  adapter: Optional[Any] = None, input_shape: Any = (),
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
