"""Writing a run folder's results.json: atomically (a temporary file, fsync, rename)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Optional

import torch

from .._core import _C


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
