"""The GPU check's dry run: scripts/gpu_check.sh --device cpu --quick runs the very steps a GPU
machine runs (build, the device tier, every GPU benchmark) with tiny sizes, so the script cannot
rot between GPU loans."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--device", "cpu",
                        "--quick", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    return p, out


def test_the_dry_run_passes_every_step(dry_run):
    p, out = dry_run
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "[gpu_check" in p.stdout and "done in" in p.stdout  # progress lines as it goes


def test_the_dry_run_writes_both_reports_within_the_file_limit(dry_run):
    _, out = dry_run
    files = sorted(os.listdir(out))
    assert {"gpu_report.md", "gpu_report.json"} <= set(files) and len(files) <= 8, files
    r = json.loads((out / "gpu_report.json").read_text())
    assert {"device", "torch", "cuda", "build_seconds", "tests", "benchmarks"} <= set(r)
    assert r["device"] == "cpu" and r["build_seconds"] > 0
    t = r["tests"]
    assert t["failed"] == 0 and t["failures"] == [] and t["passed"] >= 40, t
    assert set(r["benchmarks"]) == {"rounds", "run", "zoo", "prune", "dataset", "two_four"}
    for name, fig in r["benchmarks"].items():
        assert "error" not in fig, (name, fig)
    assert r["benchmarks"]["prune"]["speedup"] > 0
    assert r["benchmarks"]["rounds"]["resnet20/swamp-4 stacked/vs_imp"] > 0
    # how the core and the module were linked: the facts the next GPU run must show
    lk = r["link"]
    for key in ("core", "module"):
        assert lk[key]["libstdcxx_defined"] == 0 and lk[key]["needs_shared_libstdcxx"], lk[key]
    assert lk["toolchain"]["libstdc++.a"].endswith("libstdc++.a"), lk["toolchain"]
    assert " -o " in lk["link_command"]["core"] and "libstdc++.so" in lk["link_command"]["core"]
    assert "CMAKE_SHARED_LINKER_FLAGS_RELEASE" in lk["cache"], sorted(lk["cache"])
    assert "trace" not in lk  # nothing of libstdc++ defined: nothing to trace
    md = (out / "gpu_report.md").read_text()
    assert "## Tests" in md and "## Benchmarks" in md
    assert "## How the core and the module were linked" in md
    for name in r["benchmarks"]:
        assert f"### {name} — " in md
    assert r["seconds"] <= r["budget_seconds"]


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path):
    # an unknown benchmark section fails its step; the report is still written
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--device", "cpu",
                        "--quick", "--skip", "build,tests", "--bench", "nosuch,prune",
                        str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    r = json.loads((tmp_path / "gpu_report.json").read_text())
    assert not r["steps"]["bench_nosuch"]["ok"] and r["steps"]["bench_prune"]["ok"]
    assert "error" in r["benchmarks"]["nosuch"] and r["benchmarks"]["prune"]["speedup"] > 0
