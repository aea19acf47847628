"""Particles spread over processes: torchrun jobs of 2 ranks (gloo on localhost, one thread each)
against single-process runs, faults (a rank killed, a rank hanging), resume, refused setups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import swamp_ext

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed not available")

# 4 particles from round 0, lenet_300_100 on the 8x8 digits: a few seconds a round
RUN = ["run", "--dataset", "digits", "--model", "lenet_300_100", "--method", "swamp",
       "--particles", "4", "--epochs", "3", "--seed", "3"]


def _env(threads: int = 1) -> dict:
    # one thread per process: two torch processes on two cores otherwise oversubscribe OpenMP
    return dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo",
                PYTHONUNBUFFERED="1")


def _torchrun(args, ranks=2, extra=(), module=True):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", *extra, *(["-m", "swamp_ext"] if module else []), *args]


def _cli(args, timeout=600, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=_env(), **kw)


def _saved(out: Path):
    tensors = load_file(str(out / "model.safetensors"))
    results = json.loads((out / "results.json").read_text())
    return tensors, results["rounds"]


def test_two_ranks_agree_with_one_process(tmp_path):
    rounds = ["--rounds", "3"]
    one = _cli([sys.executable, "-m", "swamp_ext", *RUN, *rounds, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stdout + one.stderr
    two = _cli(_torchrun([*RUN, *rounds, "--out", str(tmp_path / "two")]))
    assert two.returncode == 0, two.stdout + two.stderr
    assert "particles spread over 2 processes" in two.stdout
    assert two.stdout.count("round   2") == 1  # rank 0 alone reports
    t1, r1 = _saved(tmp_path / "one")
    t2, r2 = _saved(tmp_path / "two")
    assert t1.keys() == t2.keys()
    masks = [k for k in t1 if k.startswith("mask.")]
    assert masks
    agree = sum(int((t1[k] == t2[k]).sum()) for k in masks) / sum(t1[k].numel() for k in masks)
    diff = max(float((t1[k].double() - t2[k].double()).abs().max()) for k in t1)
    print(f"\nmask agreement 2 ranks vs 1 process: {agree:.6f}, weights differ by <= {diff:.3g}; "
          f"accuracy per round "
          f"{[round(r['test_acc'], 4) for r in r1]} vs {[round(r['test_acc'], 4) for r in r2]}")
    assert agree >= 0.999
    for a, b in zip(r1, r2):
        assert a["particles"] == b["particles"] == 4
        assert a["sparsity"] == b["sparsity"]  # exact counts either way
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.002 + 1e-12
        assert len(b["particle_acc"]) == 4


def _children_with_rank(parent: int, rank: int) -> int:
    """The pid of the worker torchrun (pid `parent`) started with RANK=rank."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank} under {parent}")


def _wait_for_round(out: Path, job: subprocess.Popen, k: int, limit: float = 300) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        assert job.poll() is None, job.communicate()
        try:
            if len(json.loads((out / "results.json").read_text())["rounds"]) >= k:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"round {k} not reached in {limit} s")


# IMP on 2 processes: one particle, trained data-parallel by both (the gradient all-reduce)
RUN_IMP = ["run", "--dataset", "digits", "--model", "lenet_300_100", "--method", "imp",
           "--epochs", "3", "--seed", "3", "--data-parallel", "always"]


@pytest.mark.parametrize("fault,method", [("kill", "swamp"), ("hang", "swamp"), ("kill", "imp"),
                                          ("hang", "imp")])
def test_a_rank_that_dies_or_hangs_stops_the_job_and_the_rerun_resumes_bitwise(tmp_path, fault,
                                                                              method):
    # rounds of a few seconds, so that the fault lands inside the run
    # five rounds: the kill after round 1 lands well before the end even on a loaded machine
    rounds = ["--rounds", "5", "--epochs", "8", "--dist-timeout", "10"]
    run = RUN if method == "swamp" else RUN_IMP
    ref = _cli(_torchrun([*run, *rounds, "--out", str(tmp_path / "ref")]))
    assert ref.returncode == 0, ref.stdout + ref.stderr
    out = tmp_path / "cut"
    cmd = _torchrun([*run, *rounds, "--out", str(out)])
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=_env())
    victim = None
    try:
        _wait_for_round(out, job, 1)
        victim = _children_with_rank(job.pid, 1)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        log, _ = job.communicate(timeout=180)
        stopped = time.monotonic() - t0
    finally:
        if victim is not None and job.poll() is None:
            os.kill(victim, signal.SIGKILL)
            job.kill()
            job.communicate()
    assert job.returncode != 0, log
    print(f"\n{fault}: the job stopped {stopped:.1f} s after the fault")
    if fault == "hang":  # the collective's timeout, not torchrun noticing a dead process
        # SWAMP-4 on 2 processes: 2 particles each, the hang meets the all-gather at the round's
        # end; IMP: both train the one particle, the hang meets the next step's gradient sum
        what = "all-gather" if method == "swamp" else "gradient all-reduce"
        assert f"distributed run: {what}" in log and "timeout 10" in log, log
    done = len(json.loads((out / "results.json").read_text())["rounds"])
    assert 1 <= done < 5
    again = _cli(cmd)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from the checkpoint" in again.stdout
    if method == "imp":
        assert "rounds of 1 particle: 2 processes per particle (data parallel)" in again.stdout
    t_ref, r_ref = _saved(tmp_path / "ref")
    t_cut, r_cut = _saved(out)
    assert t_ref.keys() == t_cut.keys()
    for k in t_ref:
        assert torch.equal(t_ref[k], t_cut[k]), k
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in r_ref] == \
        [{k: v for k, v in r.items() if k not in strip} for r in r_cut]
    ppp = 2 if method == "imp" else 1  # the layout is recorded, resumed rounds included
    assert all(r["processes"] == 2 and r["processes_per_particle"] == ppp for r in r_cut)


_SCRIPT = """
import torch, swamp_ext
from datetime import timedelta
torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = torch.distributed.get_rank()
data = swamp_ext.datasets.load("digits")
{setup}
cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=1, epochs=2, **kw)
try:
    swamp_ext.run_imp(cfg, data, progress=False)
    print(f"rank {{rank}} ran", flush=True)
except ValueError as e:
    print(f"rank {{rank}} refused: {{e}}", flush=True)
torch.distributed.destroy_process_group()
"""


@pytest.mark.parametrize("setup,expect", [
    ("kw = {'seed': rank}",
     "rank 1 has seed=1, rank 0 has seed=0"),
    ("kw = {}; data = swamp_ext.datasets.from_arrays(data.x_train[: 600 + rank], "
     "data.y_train[: 600 + rank], data.x_test, data.y_test, 10)",
     "disagree on the model and data: rank 1 has data="),
])
def test_ranks_given_different_setups_are_refused_naming_the_difference(tmp_path, setup, expect):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(setup=setup)))
    job = _cli(_torchrun([str(script)], module=False), timeout=300)
    assert job.returncode == 0, job.stdout + job.stderr
    for r in (0, 1):
        assert f"rank {r} refused: distributed run: the processes disagree" in job.stdout, \
            job.stdout + job.stderr
    assert expect in job.stdout, job.stdout


_UNEVEN = """
import torch, swamp_ext
from datetime import timedelta
torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = torch.distributed.get_rank()
data = swamp_ext.datasets.load("digits")
# batch norm, 3 particles over 2 processes (1 + 2), particle states reported to every rank;
# the ticket at step 0 (a trained ticket is one particle, which both processes train
# data-parallel, each its shard with its own batch statistics: test_data_parallel.py)
cfg = swamp_ext.Config(model="conv4_small", particles=3, rounds=2, epochs=2, seed=5,
                       rewind_epochs=0)
seen = []
spread = swamp_ext.run_imp(cfg, data, progress=False, on_models=seen.append)
alone = swamp_ext.run_imp(cfg, data, progress=False, process_group=False)
assert spread.masks.keys() == alone.masks.keys()
for k in alone.masks:
    assert torch.equal(spread.masks[k], alone.masks[k]), k
state_a, state_s = alone.state_dict(), spread.state_dict()
for k in state_a:
    assert torch.equal(state_a[k], state_s[k]), k
assert [r.test_acc for r in spread.rounds] == [r.test_acc for r in alone.rounds]
assert [r.particle_acc for r in spread.rounds] == [r.particle_acc for r in alone.rounds]
for rm in seen:
    assert len(rm.particles) == 3
    for k, m in rm.masks.items():
        mean = sum(p[k] for p in rm.particles) / 3
        assert torch.allclose(rm.average[k], mean * m, atol=1e-6), k
        assert not torch.equal(rm.particles[0][k], rm.particles[2][k]), k
print(f"rank {rank}: equal to one process", flush=True)
torch.distributed.destroy_process_group()
"""


def test_uneven_split_with_batch_norm_equals_one_process_bitwise(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(_UNEVEN)
    job = _cli(_torchrun([str(script)], module=False), timeout=600)
    assert job.returncode == 0, job.stdout + job.stderr
    for r in (0, 1):
        assert f"rank {r}: equal to one process" in job.stdout, job.stdout + job.stderr


def test_run_imp_in_a_group_of_one_or_with_a_process_group_argument(tmp_path):
    # in-process: a one-process gloo group is not spread (same result as no group); a
    # ProcessGroup of another type is refused by name
    code = textwrap.dedent("""
        import torch, swamp_ext
        from datetime import timedelta
        store = torch.distributed.HashStore()
        torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1,
                                             timeout=timedelta(seconds=30))
        data = swamp_ext.datasets.load("digits")
        cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=2, epochs=2)
        a = swamp_ext.run_imp(cfg, data, progress=False)
        b = swamp_ext.run_imp(cfg, data, progress=False, process_group=False)
        assert swamp_ext.distributed.resolve(None) is None
        assert [r.test_acc for r in a.rounds] == [r.test_acc for r in b.rounds]
        try:
            swamp_ext.run_imp(cfg, data, progress=False, process_group="WORLD")
        except TypeError as e:
            assert "ProcessGroup" in str(e)
        else:
            raise AssertionError("a string was taken for a process group")
        print("ok")
    """)
    run = _cli([sys.executable, "-c", code], timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout + run.stderr


def test_distributed_helpers_check_their_input(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "x")
    assert not swamp_ext.distributed.launched_by_torchrun()
    with pytest.raises(ValueError, match="dist timeout must be > 0"):
        swamp_ext.distributed.init_from_env("cpu", 0)
    with pytest.raises(ValueError, match="dist_timeout must be > 0"):
        swamp_ext.run_imp(swamp_ext.Config(), swamp_ext.datasets.load("digits"), dist_timeout=-1)
