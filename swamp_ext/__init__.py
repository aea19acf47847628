"""swamp_ext: SWAMP and iterative magnitude pruning with a LibTorch C++ core."""

from __future__ import annotations

import torch  # noqa: F401  (must be imported before the compiled module)

from ._loader import load_core

_C = load_core(__path__)

from . import analysis, datasets, distributed, models, modules, ops, testing  # noqa: E402
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
    "analysis", "datasets", "distributed", "load_run", "models", "modules", "ops", "run_imp",
    "testing",
]
