"""Load the compiled core, explaining version/ABI problems instead of "undefined symbol"."""

from __future__ import annotations

import glob
import importlib
import os
from types import ModuleType

import torch

_REBUILD = (
    "Rebuild swamp_ext against the torch you run with:\n"
    "    pip install --no-build-isolation --force-reinstall --no-deps <path to swamp_ext source>\n"
    "(build without isolation so that the build uses this torch)."
)


def _base(version: str) -> str:
    return version.split("+", 1)[0]


def _use_source_build(package_path: list[str]) -> bool:
    """When swamp_ext is imported from its source checkout (e.g. from the repository root), use the
    compiled files of the persistent build folder that `pip install` wrote (build/<tag>/csrc)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = sorted(
        glob.glob(os.path.join(root, "build", "*", "csrc", "_build_info.py")), key=os.path.getmtime
    )
    if not found:
        return False
    package_path.append(os.path.dirname(found[-1]))
    return True


def load_core(package_path: list[str]) -> ModuleType:
    try:
        info = importlib.import_module("swamp_ext._build_info")
    except ImportError as exc:
        if not _use_source_build(package_path):
            raise ImportError(
                "swamp_ext is not built: its compiled part is missing. Install it with "
                "`pip install --no-build-isolation .` from the source folder."
            ) from exc
        info = importlib.import_module("swamp_ext._build_info")
    if _base(info.torch_version) != _base(torch.__version__):
        raise ImportError(
            f"swamp_ext was built against torch {info.torch_version} but torch "
            f"{torch.__version__} is installed; a C++ extension only works with the torch it was "
            f"built against.\n{_REBUILD}"
        )
    try:
        return importlib.import_module("swamp_ext._C")
    except ImportError as exc:
        msg = str(exc)
        hint = ""
        if "undefined symbol" in msg or "version `" in msg:
            hint = (
                "\nThe compiled core does not match the loaded torch libraries (ABI mismatch). "
                + _REBUILD
            )
        raise ImportError(f"could not load swamp_ext._C: {msg}{hint}") from exc
