"""Run folders: ``results.json`` (written here, read back field by field by the strict reader),
the kept rounds (``rounds/round_<k>.safetensors``), ``load_run``, which gives a Result back, and
the lock a run holds on its folder."""

from __future__ import annotations

from . import lock, rounds, strict
from .load import load_run
from .write import results_json, write_json

__all__ = ["load_run", "lock", "results_json", "rounds", "strict", "write_json"]
