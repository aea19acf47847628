"""The documentation as users meet it: every code block of the README runs, the Config's
documented choices are the ones the core accepts, the type stub matches the bindings, and an
isolated build explains itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import swamp_ext

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(lang: str) -> list[str]:
    text = README.read_text()
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHON"] = sys.executable
    return env


def test_readme_is_short_and_has_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    text = "\n".join(lines)
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci and "scripts/docs.sh" in ci


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block_runs(index, tmp_path):
    code = _blocks("python")[index]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README python block {index} failed:\n{code}\n{r.stderr[-3000:]}"


GUIDES_RUN_WHOLE = ["docs/guides/deploying.md"]


@pytest.mark.parametrize("guide", GUIDES_RUN_WHOLE)
def test_a_guides_python_blocks_run_in_order(guide, tmp_path):
    """Guides that promise runnable code: their python blocks, in order, as one program."""
    text = (ROOT / guide).read_text()
    code = "\n".join(re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M))
    assert code.strip(), guide
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{guide} failed:\n{r.stderr[-3000:]}"


# Commands of the README's bash blocks that this file does not run, and where they are covered.
COVERED_ELSEWHERE = {
    "bash scripts/test.sh": ".ci/run runs it: it is the test suite itself",
    "pip install torch": "scripts/setup.sh installs torch the same way",
    'pip install --no-build-isolation ".[datasets,io]"': "scripts/setup.sh builds with it",
}


def _commands(block: str) -> list[str]:
    """A bash block's commands: comments dropped, continuation lines joined."""
    out, cur = [], ""
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        out.append((cur + line).strip())
        cur = ""
    return out


def test_readme_shell_commands_run_or_are_covered(tmp_path):
    """Every command of the README's bash blocks: swamp-ext commands run here as written (in a
    scratch folder), the main job runs at a small size, the rest is in COVERED_ELSEWHERE."""
    commands = [c for b in _blocks("bash") for c in _commands(b)]
    assert commands
    ran = 0
    for c in commands:
        if c in COVERED_ELSEWHERE:
            continue
        if c.startswith("swamp-ext "):
            argv = [sys.executable, "-m", "swamp_ext", *c.split()[1:]]
            r = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                               timeout=600)
            assert r.returncode == 0, f"{c}\n{r.stderr[-3000:]}"
            ran += 1
        elif c == "bash scripts/demo.sh":
            env = _env() | {"SWAMP_NO_SETUP": "1", "OUT": str(tmp_path / "demo"),
                            "TMPDIR": str(tmp_path)}
            # the main job at a small size: the same script, fewer rounds and epochs
            r = subprocess.run(["bash", "scripts/demo.sh", "--model", "lenet_300_100",
                                "--dataset", "digits", "--rounds", "3", "--epochs", "2",
                                "--particles", "2"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-3000:]
            assert "swamp-2" in r.stdout and (tmp_path / "demo" / "accuracy.png").is_file()
            ran += 1
        else:
            pytest.fail(f"README command neither run by this test nor covered elsewhere: {c}")
    assert ran >= 3


def test_config_fields_are_documented_with_the_choices_the_core_accepts():
    from swamp_ext.config import Config, field_docs

    docs = field_docs()
    cpp = [name for name, _ in swamp_ext._C.config_fields(swamp_ext._C.Config())]
    assert [d["name"] for d in docs] == cpp  # the Python fields are the C++ field list
    for d in docs:
        assert d["doc"] and d["valid"], d["name"]
        if not d["choices"]:
            continue
        for choice in d["choices"]:
            cfg = Config()
            setattr(cfg, d["name"], choice)
            swamp_ext._C.validate_config(cfg.to_cpp())  # every documented choice is accepted
        with pytest.raises(ValueError, match=f"Config.{d['name']}"):
            Config(**{d["name"]: "no_such_choice"})


def test_cli_options_all_have_help_and_config_flags_carry_the_field_docs():
    import argparse

    from swamp_ext.__main__ import build_parser

    def walk(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    yield from walk(sub)

    for p in walk(build_parser()):
        for a in p._actions:
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                assert a.help, f"{p.prog} {a.option_strings or a.dest}"
    run = next(p for p in walk(build_parser()) if p.prog.endswith(" run"))
    helps = {a.dest: a.help for a in run._actions}
    assert "global magnitude" in helps["pruning"] and "(default: 0.2)" in helps["prune_ratio"]


def test_type_stub_lists_every_public_binding():
    import ast

    stub = Path(swamp_ext.__file__).with_name("_C.pyi")
    tree = ast.parse(stub.read_text())

    def names(body):
        out = set()
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, ast.AnnAssign):
                out.add(n.target.id)
        return out

    top = names(tree.body)
    subs = {n.name: names(n.body) for n in tree.body if isinstance(n, ast.ClassDef)}
    where = {"ops": "_Ops", "models": "_Models", "testing": "_Testing", "io": "_Io",
             "analysis": "_Analysis", "inference": "_Inference"}
    missing = []
    for name in dir(swamp_ext._C):
        if name.startswith("_"):
            continue
        obj = getattr(swamp_ext._C, name)
        if type(obj).__name__ == "module":
            assert name in where, f"_C.{name}: a submodule the stub does not describe"
            for sub in dir(obj):
                if not sub.startswith("_") and sub not in subs.get(where[name], set()):
                    missing.append(f"_C.{name}.{sub}")
        elif name not in top:
            missing.append(f"_C.{name}")
    assert not missing, "bindings missing from swamp_ext/_C.pyi: " + ", ".join(missing)
    # the round record's stub follows the core's one list of its fields, in order
    stub_fields = [n.target.id for n in next(
        c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "RoundResult").body
        if isinstance(n, ast.AnnAssign)]
    assert stub_fields == [f["name"] for f in swamp_ext._C.round_fields()]


def test_an_isolated_build_says_how_to_build(tmp_path):
    """A new user's `pip install .` in a plain virtual environment (build isolation on, as pip
    does by default, no torch anywhere): CMake stops with the one line to copy."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    for f in files.stdout.split():
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in _env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "wheel", "--no-deps", "-w",
                        str(tmp_path / "wheel"), str(src)],
                       env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    if r.returncode != 0 and "Could not find a version that satisfies" in out:
        pytest.skip("the package index is not reachable for the build requirements")
    assert r.returncode != 0, "an isolated build without torch should stop"
    assert "pip install --no-build-isolation ." in out, out[-3000:]
    assert "install torch first" in out
