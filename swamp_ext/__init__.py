"""swamp_ext: SWAMP and iterative magnitude pruning with a LibTorch C++ core."""

from __future__ import annotations

import torch  # noqa: F401  (must be imported before the compiled module)

from ._loader import load_core

_C = load_core(__path__)

from . import analysis, callbacks, datasets, distributed, models, modules, ops, report, testing  # noqa: E402,E501
from .config import Config  # noqa: E402
from .engine import (  # noqa: E402
    Result,
    RoundModels,
    RoundRecord,
    TrainingDivergedError,
    load_run,
    run_imp,
)

__version__: str = _C.version()

__all__ = [
    "Config", "Result", "RoundModels", "RoundRecord", "TrainingDivergedError", "__version__",
    "analysis", "callbacks", "datasets", "distributed", "load_run", "models", "modules", "ops",
    "report", "run_imp", "testing",
]
