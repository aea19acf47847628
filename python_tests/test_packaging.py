"""The package as users meet it: version, import checks, the CMake package and the C++ example."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import swamp_ext

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_build_info():
    from swamp_ext import _build_info

    assert swamp_ext.__version__ == _build_info.version
    assert swamp_ext._C.built_with_torch_version().split("+")[0] == torch.__version__.split("+")[0]


def test_torch_version_mismatch_explains_how_to_rebuild(tmp_path):
    code = textwrap.dedent(
        """
        import torch
        torch.__version__ = "1.0.0"
        try:
            import swamp_ext
        except ImportError as e:
            print("IMPORT-ERROR:", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout
    assert "IMPORT-ERROR" in out
    assert "built against torch" in out and "1.0.0" in out
    assert "--no-build-isolation" in out


def cmake_prefix_path() -> str:
    """What a C++ user runs: `python -m swamp_ext --cmake-prefix-path`."""
    return subprocess.run([sys.executable, "-m", "swamp_ext", "--cmake-prefix-path"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_cmake_prefix_path_holds_the_package_config():
    out = cmake_prefix_path()
    assert (Path(out) / "lib" / "cmake" / "swamp_core" / "swamp_coreConfig.cmake").is_file()
    assert (Path(out) / "include" / "swamp" / "pruning.h").is_file()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cpp_example_builds_and_runs_against_installed_package(tmp_path):
    prefix = cmake_prefix_path()
    build = tmp_path / "build"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    env = dict(os.environ, MAKEFLAGS="-j2")
    cfg = subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT / "examples" / "cpp"),
            "-B",
            str(build),
            *gen,
            f"-DCMAKE_PREFIX_PATH={prefix}",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, env=env)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    exe = build / "swamp_example"
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout


def test_type_stub_matches_the_compiled_module():
    import ast

    stub = Path(swamp_ext.__file__).with_name("_C.pyi")
    assert stub.is_file() and Path(swamp_ext.__file__).with_name("py.typed").is_file()
    tree = ast.parse(stub.read_text())
    top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    top |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    top = {n for n in top if not n.startswith("_")}  # private helpers describe submodules
    for name in top:
        assert hasattr(swamp_ext._C, name), name
    where = {"_Ops": swamp_ext._C.ops, "_Models": swamp_ext._C.models,
             "_Testing": swamp_ext._C.testing}
    subs = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in where]
    assert len(subs) == len(where)
    for cls in subs:
        sub = where[cls.name]
        for item in cls.body:
            name = item.name if isinstance(item, ast.FunctionDef) else item.target.id
            assert hasattr(sub, name), f"{cls.name}.{name}"
