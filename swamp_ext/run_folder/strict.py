"""Strict reading of the files a run folder holds (results.json, analysis JSON): regular files only
(a FIFO or a device is refused before a byte is read), a size bound, JSON with a nesting bound and
no NaN / Infinity, and every field of a results file checked for type, range and consistency. Any
problem is one ValueError naming the file and the field."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from .._core import _C
from ..formats import _open_regular

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
# the round record's fields, from the core's one list (SWAMP_ROUND_FIELDS): kind, bounds, whether
# records of earlier versions have it
FIELDS = tuple(_C.round_fields())
ROUND_FIELDS = frozenset(f["name"] for f in FIELDS if f["required"])
OPTIONAL_ROUND_FIELDS = frozenset(f["name"] for f in FIELDS if not f["required"])


def _check_field(c: _Check, fd: dict, v: Any, where: str, particles: int) -> None:
    """One field of a round record against its kind and bounds."""
    kind, lo, hi = fd["kind"], fd["lo"], fd["hi"]
    if kind == "count":
        c.int(v, where, int(lo), int(hi))
    elif kind in ("figure", "optional_figure"):
        c.real(v, where, lo, hi, none=kind == "optional_figure")
    elif kind == "per_particle":
        for j, x in enumerate(c.list(v, where, particles)):
            c.real(x, f"{where}[{j}]", lo, hi)
    elif kind == "per_layer":
        dens = c.dict(v, where)
        if len(dens) > 100_000:
            raise c.fail(where, "has too many layers")
        for name, x in dens.items():
            c.real(x, f"{where}[{name!r}]", lo, hi)
    else:  # a kind this reader does not know: the list and the reader disagree
        raise c.fail(where, f"has a field kind {kind!r} that this reader does not know")


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
        n = c.int(r["particles"], f"{f}.particles", 1, MAX_PARTICLES)
        for fd in FIELDS:
            if fd["name"] in r:
                _check_field(c, fd, r[fd["name"]], f"{f}.{fd['name']}", n)
        # relations between fields
        c.int(r["round"], f"{f}.round", i, i)  # 0..n-1 in order
        p = r["prunable"]
        if prunable is not None and p != prunable:
            raise c.fail(f"{f}.prunable", f"is {p} where round 0 has {prunable}")
        prunable = p
        c.int(r["remaining"], f"{f}.remaining", 0, p)
        s = float(r["sparsity"])
        if s < prev_sparsity:
            raise c.fail(f"{f}.sparsity", f"decreases ({s} after {prev_sparsity})")
        prev_sparsity = s
        rem = r["remaining"]
        if p > 0 and abs(s - (1.0 - rem / p)) > 1e-9:
            raise c.fail(f"{f}.sparsity", f"is {s} where {rem} of {p} weights remain")
        # without diagnostics (Config.diagnostics) a round has no ensemble or particle figures
        diag = r["ensemble_acc"] is not None
        if diag and r["ensemble_nll"] is None:
            raise c.fail(f"{f}.ensemble_nll", "must be a number, is NoneType None")
        if not diag and r["ensemble_nll"] is not None:
            raise c.fail(f"{f}.ensemble_nll", "is set where ensemble_acc is not")
        c.int(r.get("processes_per_particle", 1), f"{f}.processes_per_particle", 1,
              r.get("processes", 1))
        for k in ("particle_acc", "particle_nll"):
            if len(r[k]) != (n if diag else 0):
                raise c.fail(f"{f}.{k}", f"has {len(r[k])} entries for {n} particles"
                             + ("" if diag else " in a round without diagnostics"))
    return top
