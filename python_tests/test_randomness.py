"""Randomness inside your model (dropout): every draw of a run derives from Config.seed, per
particle and step, whatever state the caller left torch's generators in; the caller's state is
as it was afterwards; a resumed run draws what the uninterrupted one drew."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swamp_ext import Config, datasets, run_imp


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


class DropoutMlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(64, 48), nn.Dropout(0.2), nn.Linear(48, 10)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))


class Recorder(DropoutMlp):
    """Records the first random number each training forward draws."""

    draws: list = []

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            Recorder.draws.append(float(torch.rand(())))
        return super().forward(x)


class DropoutTransformer(nn.Module):
    """Patch embedding, one attention block with attention and MLP dropout, mean pooling (8x8
    digits, 2x2 patches)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, dropout=0.1, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1),
                                 nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.out(t.mean(1))


def small(**kw):
    base = dict(method="swamp", particles=2, rounds=2, epochs=3, rewind_epochs=1,
                batch_size=64, lr=0.05, seed=7)
    base.update(kw)
    return Config(**base)


def state_of(res):
    return {k: v.clone() for k, v in res.state_dict().items()}


def same(a, b):
    sa, sb = state_of(a), state_of(b)
    return all(torch.equal(sa[k], sb[k]) for k in sa) and \
        [r.test_nll for r in a.rounds] == [r.test_nll for r in b.rounds]


@pytest.mark.parametrize("make,mode", [(DropoutMlp, "sequential"), (DropoutMlp, "stacked"),
                                       (DropoutMlp, "auto"),
                                       (DropoutTransformer, "sequential")])
def test_the_same_seed_gives_the_same_run_whatever_the_callers_generator(digits, make, mode):
    torch.manual_seed(0)
    module = make()
    torch.manual_seed(123)
    a = run_imp(small(particle_mode=mode), digits, model=module, progress=False)
    torch.manual_seed(456)
    _ = torch.rand(17)  # the caller's stream somewhere else
    before = torch.get_rng_state()
    b = run_imp(small(particle_mode=mode), digits, model=module, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's state as it was
    assert same(a, b)
    c = run_imp(small(particle_mode=mode, seed=8), digits, model=module, progress=False)
    assert not same(a, c)


def test_particles_draw_different_streams(digits):
    torch.manual_seed(0)
    module = Recorder()
    Recorder.draws = []
    cfg = small(particle_mode="sequential", rounds=1)
    run_imp(cfg, digits, model=module, progress=False)
    spe = len(digits.x_train) // cfg.batch_size
    ticket = spe * cfg.rewind_epochs
    per_particle = spe * (cfg.epochs - cfg.rewind_epochs)
    p0 = Recorder.draws[ticket:ticket + per_particle]
    p1 = Recorder.draws[ticket + per_particle:ticket + 2 * per_particle]
    assert len(p1) == per_particle and len(set(p0)) == per_particle
    assert not set(p0) & set(p1)  # unrelated streams, not shifted copies


def test_threads_are_refused_by_name_and_auto_picks_a_reproducible_path(digits):
    torch.manual_seed(0)
    module = DropoutMlp()
    with pytest.raises(ValueError, match="draws random numbers in training mode"):
        run_imp(small(particle_mode="threads"), digits, model=module, progress=False)
    old = torch.get_num_threads()
    torch.set_num_threads(2)  # where auto would pick threads for two particles
    try:
        a = run_imp(small(particle_mode="auto"), digits, model=module, progress=False)
        b = run_imp(small(particle_mode="sequential"), digits, model=module, progress=False)
    finally:
        torch.set_num_threads(old)
    assert same(a, b)


def test_an_interrupted_run_with_dropout_resumes_bitwise(digits, tmp_path):
    torch.manual_seed(0)
    module = DropoutMlp()
    cfg = small(particle_mode="sequential")
    ref = run_imp(cfg, digits, model=module, progress=False)
    count = [0]

    def stop(p):
        count[0] += 1
        if count[0] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_imp(cfg, digits, model=module, progress=stop, checkpoint_dir=tmp_path)
    torch.manual_seed(999)  # another caller state at the resume
    got = run_imp(cfg, digits, model=module, progress=False, checkpoint_dir=tmp_path)
    assert same(ref, got)


def test_zoo_runs_are_unchanged_by_the_callers_generator(digits):
    cfg = small(model="conv4_small")
    torch.manual_seed(1)
    a = run_imp(cfg, digits, progress=False)
    torch.manual_seed(2)
    b = run_imp(cfg, digits, progress=False)
    assert same(a, b)


CHILD = """
import json, os, sys, time
import torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
sys.path.insert(0, os.environ["TESTS"])
from test_randomness import DropoutMlp, small
from swamp_ext import datasets, run_imp
torch.manual_seed(0)
module = DropoutMlp()
torch.manual_seed(int(sys.argv[3]))  # a different caller state in every process
pause = sys.argv[4] if len(sys.argv) > 4 else None
def prog(p):
    line = f"EPOCH {p.round} {p.particle} {p.epoch}"
    print(line, flush=True)
    if line == pause:
        while True:  # the parent kills us here
            time.sleep(0.05)
res = run_imp(small(particle_mode="sequential"), datasets.load("digits"), model=module,
              progress=prog, checkpoint_dir=sys.argv[1])
torch.save(res.state_dict(), sys.argv[2])
print("DONE", flush=True)
"""


def test_a_sigkilled_run_with_dropout_resumes_bitwise(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()),
               TESTS=os.path.dirname(os.path.abspath(__file__)))

    def child(ckpt, out, seed, pause=None):
        cmd = [sys.executable, str(script), str(ckpt), str(out), str(seed)]
        p = subprocess.Popen(cmd + ([pause] if pause else []), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
        lines = []
        for line in p.stdout:
            lines.append(line.rstrip())
            if pause and line.rstrip() == pause:
                p.send_signal(signal.SIGKILL)
        p.wait(timeout=300)
        return p.returncode, lines

    rc, lines = child(tmp_path / "ref", tmp_path / "ref.pt", 1)
    assert rc == 0, lines
    rc, lines = child(tmp_path / "cut", tmp_path / "cut.pt", 2, pause="EPOCH 0 1 2")
    assert rc == -signal.SIGKILL, lines  # killed inside round 0's second particle
    rc, lines = child(tmp_path / "cut", tmp_path / "cut.pt", 3)
    assert rc == 0, lines
    a = torch.load(tmp_path / "ref.pt", weights_only=True)
    b = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
