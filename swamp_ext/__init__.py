"""swamp_ext: SWAMP and iterative magnitude pruning with a LibTorch C++ core."""

from __future__ import annotations

from . import (  # noqa: I001,E501
    analysis,
    callbacks,
    datasets,
    distributed,
    errors,
    inference,
    models,
    modules,
    ops,
    report,
    testing,
)
from ._core import _C
from .config import Config
from .errors import FileWriteError, RunStopped
from .results import Result, RoundModels, RoundRecord, TrainingDivergedError
from .run_folder import load_run
from .run_folder.lock import FolderInUseError
from .running import run_imp

__version__: str = _C.version()

__all__ = [
    "Config", "FileWriteError", "FolderInUseError", "Result", "RoundModels", "RoundRecord",
    "RunStopped", "TrainingDivergedError", "__version__", "analysis", "callbacks", "datasets",
    "distributed", "errors", "inference", "load_run", "models", "modules", "ops", "report",
    "run_imp", "testing",
]
