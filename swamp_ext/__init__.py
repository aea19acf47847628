"""swamp_ext: SWAMP and iterative magnitude pruning with a LibTorch C++ core."""

from __future__ import annotations

import torch  # noqa: F401  (must be imported before the compiled module)

from ._loader import load_core

_C = load_core(__path__)

from . import ops  # noqa: E402

__version__: str = _C.version()

__all__ = ["__version__", "ops"]
