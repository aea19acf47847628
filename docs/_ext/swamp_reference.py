"""Sphinx extension: the parts of the reference that are generated from the code, so they cannot
drift from it, and the checks that fail the build when something public is undocumented.

At ``builder-inited`` it writes, under ``docs/_generated/`` (not in git):

- ``config.md``: the Config table, from ``swamp_ext.config.field_docs()`` (the field list);
- ``cli.md``: every command and option, from ``swamp_ext.__main__.build_parser()``;
- ``cpp-api.md``: every public C++ header, its purpose and its declarations;
- ``python-api.md``: one autodoc section per public module, members from ``__all__``.

It fails the build (``ExtensionError``) naming every Config field without a meaning or valid
range, every CLI option without help, every public C++ header without a leading comment or
``SWAMP_API`` declaration without a comment, and every public Python function, class or
method without a docstring.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path

from sphinx.errors import ExtensionError

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_generated"

# The user-facing modules, in the order the reference shows them.
PUBLIC_MODULES = (
    "swamp_ext",
    "swamp_ext.config",
    "swamp_ext.running",
    "swamp_ext.results",
    "swamp_ext.datasets",
    "swamp_ext.models",
    "swamp_ext.modules",
    "swamp_ext.ops",
    "swamp_ext.run_folder",
    "swamp_ext.run_folder.rounds",
    "swamp_ext.analysis",
    "swamp_ext.report",
    "swamp_ext.plots",
    "swamp_ext.export",
    "swamp_ext.callbacks",
    "swamp_ext.distributed",
    "swamp_ext.formats",
    "swamp_ext.run_folder.strict",
    "swamp_ext.precision",
    "swamp_ext.recipes",
)


# ---- Config ------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def config_page() -> tuple[str, list[str]]:
    from swamp_ext.config import field_docs

    problems = []
    rows = ["| field | type | default | meaning | valid |", "|---|---|---|---|---|"]
    for f in field_docs():
        if not f["doc"]:
            problems.append(f"Config.{f['name']}: no meaning (metadata 'doc')")
        if not f["valid"]:
            problems.append(f"Config.{f['name']}: no valid range (metadata 'valid')")
        doc = (f["doc"] or "").replace("``", "`")
        valid = (f["valid"] or "").replace("``", "`")
        rows.append(f"| `{f['name']}` | `{_cell(f['type'])}` | `{f['default']!r}` | "
                    f"{_cell(doc)} | {_cell(valid)} |")
    return "\n".join(rows) + "\n", problems


# ---- CLI ---------------------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, sub, helps.get(name) or ""))
    return out


def _option_rows(parser: argparse.ArgumentParser, where: str, problems: list[str]) -> list[str]:
    rows = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(a.option_strings) if a.option_strings else a.dest
        if not a.help:
            problems.append(f"{where} {names}: no help text")
        extra = []
        if a.choices:
            extra.append("one of " + ", ".join(map(str, a.choices)))
        if a.required and a.option_strings:
            extra.append("required")
        if a.nargs in ("+", "*"):
            extra.append("one or more" if a.nargs == "+" else "any number")
        text = (a.help or "") + (f" ({'; '.join(extra)})" if extra else "")
        rows.append(f"| `{_cell(names)}` | {_cell(text)} |")
    return rows


def cli_page() -> tuple[str, list[str]]:
    from swamp_ext.__main__ import build_parser

    problems: list[str] = []
    parser = build_parser()
    lines = ["Generated from the command line's parser: `swamp-ext` and `python -m swamp_ext` are "
             "the same program.", ""]

    def section(title: str, p: argparse.ArgumentParser, about: str, depth: int) -> None:
        lines.extend([f"{'#' * depth} `{title}`", ""])
        if about:
            lines.extend([about[0].upper() + about[1:] + ".", ""])
        rows = _option_rows(p, title, problems)
        if rows:
            lines.extend(["| argument | meaning |", "|---|---|", *rows, ""])
        for name, sub, text in _subparsers(p):
            if not text:
                problems.append(f"{title} {name}: no help text")
            section(f"{title} {name}", sub, text, min(depth + 1, 4))

    section("swamp-ext", parser, "", 2)
    return "\n".join(lines), problems


# ---- C++ headers -------------------------------------------------------------------------------
_DECL = re.compile(r"^\s*SWAMP_API\b")


def _commented(src: list[str], i: int) -> bool:
    """Whether declaration line i has a comment: on its line, or above it, where the lines
    between are declarations of the same group (SWAMP_API lines, their indented continuation
    lines, template heads, the type aliases they take)."""
    if "//" in src[i]:
        return True
    j = i - 1
    while j >= 0:
        line = src[j]
        if line.strip().startswith("//"):
            return True
        if not line.strip():
            return False
        if not (_DECL.match(line) or line.startswith((" ", "template", "using "))):
            return False
        j -= 1
    return False


def cpp_page() -> tuple[str, list[str]]:
    problems = []
    include = ROOT / "csrc" / "include" / "swamp"
    lines = ["Generated from the public headers in `csrc/include/swamp/` (installed with the "
             "package; `#include <swamp/swamp.h>` includes them all). Errors are "
             "`c10::ValueError` / `c10::TypeError`.", ""]
    for h in sorted(include.glob("*.h")):
        text = h.read_text()
        src = text.splitlines()
        head = []
        for ln in src:
            if ln.startswith("//"):
                head.append(ln[2:].strip())
            else:
                break
        if not head:
            problems.append(f"{h.name}: no leading comment saying what it holds")
        for i, ln in enumerate(src):
            if _DECL.match(ln) and not _commented(src, i):
                problems.append(f"{h.name}:{i + 1}: SWAMP_API declaration without a comment: "
                                f"{ln.strip()}")
        body = "\n".join(ln for ln in src[len(head):]
                         if not ln.startswith("#include") and not ln.startswith("#pragma"))
        body = re.sub(r"\n{3,}", "\n\n", body).strip("\n")
        paragraphs = " ".join(head).replace("  ", " ")
        lines += [f"## `swamp/{h.name}`", "", paragraphs, "", "```cpp", body, "```", ""]
    return "\n".join(lines), problems


# ---- Python API --------------------------------------------------------------------------------
def _public_names(mod) -> list[str]:
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, v in vars(mod).items()
                 if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__
                 and (inspect.isfunction(v) or inspect.isclass(v))]
    return sorted(n for n in names if not n.startswith("_"))


def _own_methods(cls) -> list[tuple[str, object]]:
    out = []
    for name, v in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, property):
            v = v.fget
        if inspect.isfunction(v):
            out.append((name, v))
    return out


def python_page() -> tuple[str, list[str]]:
    problems = []
    lines = []
    for modname in PUBLIC_MODULES:
        mod = importlib.import_module(modname)
        if not (mod.__doc__ or "").strip():
            problems.append(f"{modname}: no module docstring")
        names = _public_names(mod)
        documented = []
        for n in names:
            obj = getattr(mod, n, None)
            if inspect.ismodule(obj) or obj is None:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", modname) != modname and modname != "swamp_ext":
                # re-exported from another public module: documented there
                continue
            if modname == "swamp_ext":
                continue  # the top level re-exports; its members are documented where defined
            if not (obj.__doc__ or "").strip() or (inspect.isclass(obj)
                                                   and obj.__doc__ == type.__doc__):
                problems.append(f"{modname}.{n}: no docstring")
            if inspect.isclass(obj):
                for m, f in _own_methods(obj):
                    if not (f.__doc__ or "").strip():
                        problems.append(f"{modname}.{n}.{m}: no docstring")
            documented.append(n)
        lines += [f"## `{modname}`", "", "```{eval-rst}", f".. automodule:: {modname}"]
        if documented:
            lines += ["   :members: " + ", ".join(documented)]
        lines += ["```", ""]
    return "\n".join(lines), problems


_ARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*): (\S.*)$")


def arguments_as_fields(app, what, name, obj, options, lines) -> None:
    """Our docstrings describe arguments as ``name: text`` lines (continuation lines indented),
    readable in ``help()``; in the reference they become a field list."""
    if what not in ("function", "method", "class"):
        return
    out: list[str] = []
    state = "blank"  # blank | field | text
    for line in lines:
        m = _ARG.match(line)
        if m:
            if state == "text":
                out.append("")
            out.append(f":{m.group(1)}: {m.group(2)}")
            state = "field"
        elif not line.strip():
            out.append(line)
            state = "blank"
        elif line.startswith(" ") and state == "field":
            out.append(line)
        else:
            if state == "field":
                out.append("")
            out.append(line)
            state = "text"
    lines[:] = out


def generate(app) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for name, make in (("config.md", config_page), ("cli.md", cli_page),
                       ("cpp-api.md", cpp_page), ("python-api.md", python_page)):
        text, found = make()
        problems += found
        path = OUT / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    if problems:
        raise ExtensionError("undocumented public items:\n  " + "\n  ".join(problems))


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", arguments_as_fields)
    return {"version": "1", "parallel_read_safe": True}
