"""Named configurations for the standard benchmarks, as plain TOML files.

Each recipe file has ``description``, ``source``, ``expected_cost``, ``dataset`` and a ``[config]``
table with ``swamp_ext.Config`` fields. Copy one, edit it and run it with
``swamp-ext run --config my_run.toml`` (command-line flags override the file).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recipe", "get", "load_file", "names"]

_HERE = os.path.dirname(os.path.abspath(__file__))

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as _toml


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    config: dict[str, Any]
    description: str = ""
    source: str = ""
    expected_cost: str = ""
    path: str = field(default="", compare=False)

    def make_config(self, **overrides: Any) -> Any:
        """The recipe's Config, with ``overrides`` applied on top."""
        from ..config import Config

        return Config.from_dict({**self.config, **overrides})


def names() -> list[str]:
    """The names of the built-in recipes, sorted."""
    return sorted(f[:-5] for f in os.listdir(_HERE) if f.endswith(".toml"))


MAX_RECIPE_BYTES = 1 << 20


def load_file(path: str) -> Recipe:
    """Reads a recipe / run configuration TOML file, checking its fields."""
    from ..formats import _open_regular

    try:
        with _open_regular(path) as f:  # a FIFO or a device is refused, never waited on
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_RECIPE_BYTES} bytes; it was not parsed")
    try:
        data = _toml.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason})") from None
    except (_toml.TOMLDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not valid TOML: {type(e).__name__}: {e}") from None
    known = {"description", "source", "expected_cost", "dataset", "config"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected "
                         f"{', '.join(sorted(known))}")
    cfg = data.get("config", {})
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: [config] must be a table of Config fields")
    from ..config import Config

    bad = sorted(set(cfg) - set(Config.fields()))
    if bad:
        raise ValueError(f"{path}: unknown Config field(s) in [config]: {', '.join(bad)}")
    name = os.path.splitext(os.path.basename(path))[0]
    return Recipe(name=name, dataset=str(data.get("dataset", "mnist5k")), config=dict(cfg),
                  description=str(data.get("description", "")),
                  source=str(data.get("source", "")),
                  expected_cost=str(data.get("expected_cost", "")), path=path)


def get(name: str) -> Recipe:
    """A built-in recipe by name (see ``names()``)."""
    if name not in names():
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(names())}")
    return load_file(os.path.join(_HERE, name + ".toml"))
