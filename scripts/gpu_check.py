"""The GPU check's steps (scripts/gpu_check.sh is the command; see its header).

Steps, each in its own time box, each recorded whatever happens to the others:
  env    device, torch, CUDA, compiler, cores
  build  the extension against this machine's torch: every core, no build isolation, no network
         (pip --no-index --no-deps), installed into OUTDIR's scratch folder, not the system
  tests  the device tier (python_tests/test_device_tier.py): -m cuda on a GPU; its cpu variants
         in the dry run
  bench  benchmarks/gpu.py, one section per process (a crash or time-out loses one section)
Writes OUTDIR/gpu_report.md (for a person), OUTDIR/gpu_report.json (keys device, torch, cuda,
build_seconds, tests {passed, failed, skipped, failures}, benchmarks {name: figures}, steps) and
the logs build.log, tests.log, bench.log: 5 files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import linkfacts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ["rounds", "run", "zoo", "prune", "dataset", "two_four"]


def say(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Clock:
    def __init__(self, budget: float) -> None:
        self.end = time.monotonic() + budget

    def box(self, seconds: float) -> float:
        """A step's time box: its own limit, within what is left of the whole budget."""
        return max(1.0, min(seconds, self.end - time.monotonic()))


def run_step(cmd: list[str], log: str, timeout: float, env: dict, cwd: str = ROOT) -> dict:
    t0 = time.monotonic()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}  (time box {timeout:.0f} s)\n")
        f.flush()
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                               timeout=timeout, start_new_session=True)
            rc, why = p.returncode, "" if p.returncode == 0 else f"exit status {p.returncode}"
        except subprocess.TimeoutExpired:
            rc, why = 124, f"time box of {timeout:.0f} s exceeded"
        f.write(f"[{why or 'ok'} after {time.monotonic() - t0:.1f} s]\n")
    return {"ok": rc == 0, "rc": rc, "why": why, "seconds": round(time.monotonic() - t0, 1)}


def tail(path: str, n: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def probe(env: dict) -> dict:
    code = ("import json, torch, os; c = torch.cuda.is_available(); print(json.dumps({"
            "'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': c, "
            "'gpu': torch.cuda.get_device_name() if c else None, "
            "'gpu_count': torch.cuda.device_count(), 'cudnn': torch.backends.cudnn.version(), "
            "'cpu_capability': torch.backends.cpu.get_cpu_capability(), "
            "'threads': torch.get_num_threads()}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001 - recorded, the check goes on
        info = {"torch": None, "error": str(e)}
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info.update({"python": platform.python_version(), "cpu": cpu, "cores": os.cpu_count()})
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx:
        v = subprocess.run([cxx, "--version"], capture_output=True, text=True)
        info["compiler"] = v.stdout.splitlines()[0] if v.stdout else cxx
    return info


SMOKE = """
import faulthandler, sys
faulthandler.enable()
import torch, swamp_ext
d = swamp_ext.datasets.load("digits")
for dev in sys.argv[1:]:
    cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=2, epochs=2, device=dev)
    r = swamp_ext.run_imp(cfg, d, progress=False)
    print("smoke", dev, "ok", round(r.rounds[-1].test_acc, 4), flush=True)
"""


def link_facts(site: str, scratch: str) -> dict:
    """How the core and the module were linked against libstdc++ (scripts/linkfacts.py): a copy
    of libstdc++.a linked into either crashes at the first number written to a stream. Records
    what the next GPU run must show, and, where anything of libstdc++ is defined in ours, the
    relink with -Wl,--trace -Wl,-y that names the archive which supplied it."""
    facts: dict = {
        "env": {k: v for k, v in os.environ.items()
                if k in ("CC", "CXX", "LDFLAGS", "CXXFLAGS", "CMAKE_ARGS", "CMAKE_TOOLCHAIN_FILE",
                         "LIBRARY_PATH") or "FLAGS" in k or k.startswith(("CMAKE", "LD_"))},
        "toolchain": {n: linkfacts.print_file_name(n)
                      for n in ("libstdc++.so", "libstdc++.so.6", "libstdc++.a")},
    }
    libs = linkfacts.installed_libraries(os.path.join(site, "swamp_ext"))
    if "core" not in libs:
        facts["error"] = "libswamp_core not found in the installed package"
    if shutil.which("nm") and shutil.which("readelf"):
        for key, lib in libs.items():
            facts[key] = linkfacts.library_facts(lib)
    else:
        facts["error"] = "nm / readelf (binutils) not installed: the libraries were not inspected"
    for build in linkfacts.build_dirs(ROOT):
        if linkfacts.link_output(build, "swamp_core") is None:
            continue  # another project's build folder (the C++ unit tests')
        facts["cache"] = linkfacts.cache_flags(build)
        for key, target in (("core", "swamp_core"), ("module", "_C")):
            output = linkfacts.link_output(build, target)
            cmd = linkfacts.link_command(build, output) if output else None
            if cmd:
                facts.setdefault("link_command", {})[key] = cmd[:4000]
            lib = libs.get(key)
            if cmd and lib and facts.get(key, {}).get("libstdcxx_defined"):
                sym = linkfacts.libstdcxx_copied(lib, mangled=True)[0]
                facts.setdefault("trace", {})[key] = linkfacts.trace_symbol(
                    build, cmd, output, sym, scratch)
    return facts


def debugger() -> str:
    for d in ("gdb", "cuda-gdb"):
        if shutil.which(d):
            return d
    return ""


def has_module(name: str, env: dict) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"], env=env,
                          capture_output=True).returncode == 0


def parse_junit(path: str) -> dict:
    res = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return res
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            res["failed"] += 1
            msg = (bad.get("message") or bad.text or "").strip().splitlines()
            res["failures"].append({"test": name, "message": msg[0][:400] if msg else ""})
        elif case.find("skipped") is not None:
            res["skipped"] += 1
        else:
            res["passed"] += 1
    return res


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole check (default: 540 cuda, 300 cpu --quick)")
    p.add_argument("--skip", default="", help="comma-separated steps to skip: build,tests,bench")
    p.add_argument("--bench", default=",".join(SECTIONS), help="benchmark sections to run")
    p.add_argument("-k", dest="select", default="", help="pytest -k expression for the tests")
    a = p.parse_args()
    budget = a.budget or (300.0 if a.quick else 540.0)
    clock = Clock(budget)
    out = os.path.abspath(a.outdir)
    os.makedirs(out, exist_ok=True)
    skip = {s for s in a.skip.split(",") if s}
    logs = {k: os.path.join(out, f"{k}.log") for k in ("build", "tests", "bench")}
    for f in logs.values():
        open(f, "w").close()
    scratch = tempfile.mkdtemp(prefix="swamp_gpu_check_")
    site = os.path.join(scratch, "site")
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
                "CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    report: dict = {"device": a.device, "quick": a.quick, "budget_seconds": budget, "steps": {}}
    say(f"device {a.device}{' (quick)' if a.quick else ''}, budget {budget:.0f} s, out {out}")

    info = probe(env)
    report.update({"torch": info.get("torch"), "cuda": info.get("cuda"), "machine": info})
    say(f"torch {info.get('torch')}, CUDA {info.get('cuda')}, GPU {info.get('gpu')}, "
        f"{info.get('cores')} cores")
    if a.device == "cuda" and not info.get("cuda_available"):
        say("warning: --device cuda but torch sees no CUDA device: the cuda tests will skip")

    # ---- build ----
    report["build_seconds"] = None
    if "build" in skip:
        report["steps"]["build"] = {"ok": True, "why": "skipped: using the installed swamp_ext"}
        site = ""
    else:
        say("build: pip install --no-build-isolation --no-index --no-deps (every core)")
        cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
               "--no-deps", "--no-compile", "--target", site, "--upgrade", ROOT]
        if a.device == "cuda":
            # another machine's compiler may warn where ours does not: warnings are not errors
            cmd[4:4] = ["-C", "cmake.define.SWAMP_WERROR=OFF"]
        st = run_step(cmd, logs["build"], clock.box(420 if a.device == "cuda" else 600), env)
        report["steps"]["build"] = st
        report["build_seconds"] = st["seconds"]
        say(f"build: {'ok' if st['ok'] else 'FAILED (' + st['why'] + ')'} in {st['seconds']} s")
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        report["link"] = link_facts(site, scratch)
        for key in ("core", "module"):
            lk = report["link"].get(key, {})
            if lk.get("libstdcxx_defined") or lk.get("needs_shared_libstdcxx") is False:
                say(f"warning: the {key} defines {lk.get('libstdcxx_defined')} libstdc++ symbols, "
                    f"NEEDED {lk.get('needed')}: a static libstdc++ copy; see link in "
                    "gpu_report.json (trace names the archive)")

    # ---- smoke: one tiny run per device; a crash is run again under a debugger ----
    devices = ["cpu"] + (["cuda"] if a.device == "cuda" else [])
    script = os.path.join(scratch, "smoke.py")
    with open(script, "w") as f:
        f.write(SMOKE)
    st = run_step([sys.executable, script, *devices], logs["tests"], clock.box(120), env,
                  cwd=scratch)
    report["steps"]["smoke"] = st
    say(f"smoke: {'ok' if st['ok'] else 'FAILED (' + st['why'] + ')'} in {st['seconds']} s")
    if st["rc"] < 0 and debugger():
        crash = os.path.join(out, "crash.txt")
        say(f"smoke crashed (signal {-st['rc']}): backtrace under {debugger()} -> crash.txt")
        cmd = [debugger(), "-batch", "-ex", "set pagination off", "-ex", "run", "-ex", "bt 40",
               "--args", sys.executable, script, *devices]
        try:
            p = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True,
                               timeout=clock.box(150))
            text = p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            text = f"debugger timed out: {e}"
        keep = [ln[:600] for ln in text.splitlines() if not ln.startswith(("[New Thread",
                                                                           "[Thread "))]
        with open(crash, "w") as f:
            f.write("\n".join(keep[-300:]) + "\n")

    # ---- tests ----
    junit = os.path.join(scratch, "junit.xml")
    if "tests" in skip:
        report["tests"] = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
        report["steps"]["tests"] = {"ok": True, "why": "skipped"}
    else:
        sel = ["-m", "cuda"] if a.device == "cuda" else ["-m", "not cuda"]
        tenv = dict(env)
        if a.device == "cpu":
            tenv["SWAMP_DEVICE_TIER_CPU"] = "1"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *sel, "test_device_tier.py"]
        if a.select:
            cmd += ["-k", a.select]
        if has_module("xdist", env):
            # one worker process: a test that crashes the process (a segfault in native code) is
            # reported as failed by name and a fresh worker runs the rest
            cmd[4:4] = ["-n", "1", "--max-worker-restart", "20"]
        say(f"tests: {' '.join(cmd[3:])}")
        st = run_step(cmd, logs["tests"], clock.box(300 if a.device == "cuda" else 240), tenv,
                      cwd=os.path.join(ROOT, "python_tests"))
        report["steps"]["tests"] = st
        report["tests"] = parse_junit(junit)
        t = report["tests"]
        say(f"tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped "
            f"({st['why'] or 'ok'}, {st['seconds']} s)")
        for fl in t["failures"]:
            say(f"  FAILED {fl['test']}: {fl['message'][:160]}")

    # ---- benchmarks ----
    report["benchmarks"] = {}
    tables = {}
    if "bench" not in skip:
        for name in [s for s in a.bench.split(",") if s]:
            js = os.path.join(scratch, f"bench_{name}.json")
            cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "gpu.py"), name,
                   "--device", a.device, "--json", js] + (["--quick"] if a.quick else [])
            say(f"bench {name}")
            st = run_step(cmd, logs["bench"], clock.box(120), env)
            report["steps"][f"bench_{name}"] = st
            try:
                with open(js) as f:
                    got = json.load(f)[name]
                report["benchmarks"][name] = got["figures"]
                tables[name] = (got["machine"], got["table"])
            except (OSError, ValueError, KeyError):
                report["benchmarks"][name] = {"error": st["why"] or "no figures written"}
            say(f"bench {name}: {'ok' if st['ok'] else 'FAILED (' + st['why'] + ')'} "
                f"in {st['seconds']} s")

    report["seconds"] = round(budget - (clock.end - time.monotonic()), 1)
    with open(os.path.join(out, "gpu_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_markdown(os.path.join(out, "gpu_report.md"), report, tables, logs)
    shutil.rmtree(scratch, ignore_errors=True)
    ok = all(s.get("ok") for s in report["steps"].values())
    say(f"done in {report['seconds']} s: {'all steps ok' if ok else 'some steps FAILED'}; "
        f"{out}/gpu_report.md")
    return 0 if ok else 1


def write_markdown(path: str, r: dict, tables: dict, logs: dict) -> None:
    m = r["machine"]
    lines = [f"# GPU check: {m.get('gpu') or m.get('cpu')}", "",
             f"- device: `{r['device']}`{' (quick dry run)' if r['quick'] else ''}; torch "
             f"{r['torch']}, CUDA {r['cuda']}, cuDNN {m.get('cudnn')}; Python {m.get('python')}; "
             f"{m.get('cores')} cores ({m.get('cpu')}); {m.get('compiler', '?')}",
             f"- whole check: {r['seconds']} s of a {r['budget_seconds']:.0f} s budget", "",
             "| step | result | seconds |", "|---|---|---|"]
    for k, s in r["steps"].items():
        lines.append(f"| {k} | {'ok' if s.get('ok') else 'FAILED: ' + s.get('why', '')} "
                     f"| {s.get('seconds', '')} |")
    lk = r.get("link")
    if lk:
        lines += ["", "## How the core and the module were linked", ""]
        for key in ("core", "module"):
            f = lk.get(key, {})
            lines.append(f"- {key}: NEEDED {', '.join(f.get('needed', []))}; libstdc++ symbols "
                         f"defined: {f.get('libstdcxx_defined', '?')} "
                         f"{f.get('libstdcxx_examples', '')}")
        lines += [f"- toolchain: {lk.get('toolchain')}", f"- build environment: {lk.get('env')}",
                  f"- linker/compiler flags in the cache: {lk.get('cache')}"]
        for key, text in lk.get("trace", {}).items():
            lines += [f"- relink of the {key} with --trace -y:", "", "```", text, "```"]
    t = r.get("tests", {})
    lines += ["", "## Tests", "",
              f"{t.get('passed', 0)} passed, {t.get('failed', 0)} failed, "
              f"{t.get('skipped', 0)} skipped"]
    for fl in t.get("failures", []):
        lines.append(f"- `{fl['test']}`: {fl['message']}")
    if not r["steps"].get("build", {}).get("ok", True):
        lines += ["", "## Build log (end)", "", "```", tail(logs["build"], 40), "```"]
    lines += ["", "## Benchmarks", ""]
    for name, fig in r["benchmarks"].items():
        if name in tables:
            lines += [f"### {name} — {tables[name][0]}", "", tables[name][1], ""]
        else:
            lines += [f"### {name}", "", f"no figures: {fig.get('error')}", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
