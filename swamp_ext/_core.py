"""The compiled core, loaded in one place: every module of the package imports ``_C`` from here,
so that no import order matters (and version / ABI problems are explained, see _loader)."""

from __future__ import annotations

import sys

import torch  # noqa: F401  (torch's libraries before the compiled module's)

from ._loader import load_core

_C = load_core(sys.modules[__package__].__path__)
