"""Strict reading of the files a run folder holds (results.json, analysis JSON): regular files only
(a FIFO or a device is refused before a byte is read), a size bound, JSON with a nesting bound and
no NaN / Infinity, and every field of a results file checked for type, range and consistency. Any
problem is one ValueError naming the file and the field."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from .formats import _open_regular

MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64


def read_json(path: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              allow_nan: bool = False) -> Any:
    """The JSON value of `path`, a regular file of at most `max_bytes`, nested at most
    `max_depth` deep, without NaN / Infinity (unless `allow_nan`: analyses mark figures that were
    not computed with NaN)."""
    with _open_regular(path) as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes; it was not parsed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:  # nesting outside strings, before the parser recurses into it
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise ValueError(f"{path} nests deeper than {max_depth} levels; it was not parsed")
        elif ch in "]}":
            depth -= 1

    def constant(name: str) -> Any:
        raise ValueError(f"{path} holds {name}, which JSON does not allow")

    try:
        return json.loads(text) if allow_nan else json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


class _Check:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, field: str, what: str) -> ValueError:
        return ValueError(f"{self.path}: {field} {what}")

    def dict(self, v: Any, field: str) -> dict:
        if not isinstance(v, dict):
            raise self.fail(field, f"must be an object, is {type(v).__name__}")
        return v

    def list(self, v: Any, field: str, max_len: int) -> list:
        if not isinstance(v, list):
            raise self.fail(field, f"must be a list, is {type(v).__name__}")
        if len(v) > max_len:
            raise self.fail(field, f"has {len(v)} entries, more than {max_len}")
        return v

    def int(self, v: Any, field: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(field, f"must be an integer, is {type(v).__name__} {v!r:.40}")
        if not lo <= v <= hi:
            raise self.fail(field, f"must be in [{lo}, {hi}], is {v}")
        return v

    def real(self, v: Any, field: str, lo: float = -math.inf, hi: float = math.inf,
             none: bool = False) -> Optional[float]:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(field, f"must be a number, is {type(v).__name__} {v!r:.40}")
        v = float(v)
        if not math.isfinite(v) or not lo <= v <= hi:
            raise self.fail(field, f"must be a finite number in [{lo}, {hi}], is {v}")
        return v

    def str(self, v: Any, field: str) -> str:
        if not isinstance(v, str):
            raise self.fail(field, f"must be a string, is {type(v).__name__}")
        return v


MAX_ROUNDS = 10_000
MAX_PARTICLES = 100_000
MAX_WEIGHTS = 1 << 50
ROUND_FIELDS = {"round", "particles", "sparsity", "sparsity_all", "remaining", "prunable",
                "test_acc", "test_nll", "ensemble_acc", "ensemble_nll", "particle_acc",
                "particle_nll", "layer_density", "train_loss", "seconds"}
OPTIONAL_ROUND_FIELDS = {"test_ece", "ensemble_ece", "skipped_steps", "processes",
                         "processes_per_particle"}


def check_results(saved: Any, path: str) -> dict:
    """A results.json value checked field by field (returns it)."""
    c = _Check(path)
    top = c.dict(saved, "the file")
    for key in ("config", "rounds"):
        if key not in top:
            raise c.fail(key, "is missing")
    c.dict(top["config"], "config")
    if "dataset" in top:
        c.str(top["dataset"], "dataset")
    if "num_classes" in top:
        c.int(top["num_classes"], "num_classes", 0, 1 << 31)
    if "input_shape" in top:
        for i, d in enumerate(c.list(top["input_shape"], "input_shape", 8)):
            c.int(d, f"input_shape[{i}]", 1, 1 << 31)
    if "channels_last" in top and not isinstance(top["channels_last"], bool):
        raise c.fail("channels_last", f"must be true or false, got {top['channels_last']!r}")
    if "ensemble_of" in top:
        for i, x in enumerate(c.list(top["ensemble_of"], "ensemble_of", MAX_PARTICLES)):
            c.str(x, f"ensemble_of[{i}]")
    rounds = c.list(top["rounds"], "rounds", MAX_ROUNDS)
    prev_sparsity, prunable = -1.0, None
    for i, r in enumerate(rounds):
        f = f"rounds[{i}]"
        c.dict(r, f)
        missing = ROUND_FIELDS - set(r)
        if missing:
            raise c.fail(f, f"lacks {', '.join(sorted(missing))}")
        unknown = set(r) - ROUND_FIELDS - OPTIONAL_ROUND_FIELDS
        if unknown:
            raise c.fail(f, f"has unknown fields {', '.join(sorted(unknown))}")
        c.int(r["round"], f"{f}.round", i, i)  # 0..n-1 in order
        n = c.int(r["particles"], f"{f}.particles", 1, MAX_PARTICLES)
        p = c.int(r["prunable"], f"{f}.prunable", 0, MAX_WEIGHTS)
        if prunable is not None and p != prunable:
            raise c.fail(f"{f}.prunable", f"is {p} where round 0 has {prunable}")
        prunable = p
        c.int(r["remaining"], f"{f}.remaining", 0, p)
        s = c.real(r["sparsity"], f"{f}.sparsity", 0.0, 1.0)
        if s < prev_sparsity:
            raise c.fail(f"{f}.sparsity", f"decreases ({s} after {prev_sparsity})")
        prev_sparsity = s
        rem = r["remaining"]
        if p > 0 and abs(s - (1.0 - rem / p)) > 1e-9:
            raise c.fail(f"{f}.sparsity", f"is {s} where {rem} of {p} weights remain")
        c.real(r["sparsity_all"], f"{f}.sparsity_all", 0.0, 1.0)
        c.real(r["test_acc"], f"{f}.test_acc", 0.0, 1.0)
        for k in ("test_nll", "seconds"):
            c.real(r[k], f"{f}.{k}", 0.0)
        # without diagnostics (Config.diagnostics) a round has no ensemble or particle figures
        diag = r["ensemble_acc"] is not None
        c.real(r["ensemble_acc"], f"{f}.ensemble_acc", 0.0, 1.0, none=True)
        c.real(r["ensemble_nll"], f"{f}.ensemble_nll", 0.0, none=not diag)
        if not diag and r["ensemble_nll"] is not None:
            raise c.fail(f"{f}.ensemble_nll", "is set where ensemble_acc is not")
        c.real(r["train_loss"], f"{f}.train_loss")
        for k in ("test_ece", "ensemble_ece"):
            c.real(r.get(k), f"{f}.{k}", 0.0, 1.0, none=True)
        c.int(r.get("skipped_steps", 0), f"{f}.skipped_steps", 0, 1 << 62)
        procs = c.int(r.get("processes", 1), f"{f}.processes", 1, 1 << 30)
        c.int(r.get("processes_per_particle", 1), f"{f}.processes_per_particle", 1, procs)
        for k, lo, hi in (("particle_acc", 0.0, 1.0), ("particle_nll", 0.0, math.inf)):
            vals = c.list(r[k], f"{f}.{k}", n)
            if len(vals) != (n if diag else 0):
                raise c.fail(f"{f}.{k}", f"has {len(vals)} entries for {n} particles"
                             + ("" if diag else " in a round without diagnostics"))
            for j, v in enumerate(vals):
                c.real(v, f"{f}.{k}[{j}]", lo, hi)
        dens = c.dict(r["layer_density"], f"{f}.layer_density")
        if len(dens) > 100_000:
            raise c.fail(f"{f}.layer_density", "has too many layers")
        for name, v in dens.items():
            c.real(v, f"{f}.layer_density[{name!r}]", 0.0, 1.0)
    return top
