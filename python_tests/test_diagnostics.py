"""Config.diagnostics=False: a round without the per-particle figures (each particle's batch-norm
recompute and evaluation, the prediction ensemble) trains and prunes exactly as with them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import swamp_ext
from swamp_ext import Config, run_imp


@pytest.fixture(scope="module")
def digits():
    return swamp_ext.datasets.load("digits")


def cfg(**kw):
    base = dict(model="conv4", method="swamp", particles=2, rounds=2, epochs=2, batch_size=64,
                lr=0.05, seed=5)
    base.update(kw)
    return Config(**base)


@pytest.mark.parametrize("method", ["swamp", "imp"])
def test_without_diagnostics_the_average_figures_and_masks_are_the_same(digits, method):
    on = run_imp(cfg(method=method), digits, progress=False)
    off = run_imp(cfg(method=method, diagnostics=False), digits, progress=False)
    for name, m in on.masks.items():
        assert torch.equal(off.masks[name], m), name
    for name, v in on.state_dict().items():  # batch-norm buffers of the average included
        assert torch.equal(off.state_dict()[name], v), name
    for a, b in zip(on.rounds, off.rounds):
        assert (a.test_acc, a.test_nll, a.test_ece, a.sparsity) == (
            b.test_acc, b.test_nll, b.test_ece, b.sparsity)
        assert a.train_loss == b.train_loss
        assert len(a.particle_acc) == a.particles and a.ensemble_acc is not None
        assert b.particle_acc == [] and b.particle_nll == []
        assert b.ensemble_acc is None and b.ensemble_nll is None and b.ensemble_ece is None


def test_a_run_without_diagnostics_saves_loads_resumes_and_shows(digits, tmp_path):
    c = cfg(diagnostics=False)
    res = run_imp(c, digits, progress=False, checkpoint_dir=tmp_path)
    loaded = swamp_ext.load_run(tmp_path)  # the strict reader accepts the empty figures
    assert [r.test_acc for r in loaded.rounds] == [r.test_acc for r in res.rounds]
    assert loaded.rounds[1].particle_acc == [] and loaded.rounds[1].ensemble_acc is None
    # only rounds may grow: the checkpoint's records (no particle figures) pass its checks
    more = run_imp(cfg(diagnostics=False, rounds=3), digits, progress=False,
                   checkpoint_dir=tmp_path)
    assert len(more.rounds) == 3 and more.rounds[:2] == res.rounds[:2]
    shown = subprocess.run([sys.executable, "-m", "swamp_ext", "show", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    # a record that claims particle figures in a round without an ensemble is refused
    path = tmp_path / "results.json"
    saved = json.loads(path.read_text())
    saved["rounds"][1]["particle_acc"] = [0.5, 0.5]
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"rounds\[1\]\.particle_acc"):
        swamp_ext.load_run(tmp_path)


def test_a_run_with_diagnostics_does_not_resume_without_them(digits, tmp_path):
    """A checkpoint of another configuration is refused, naming the field."""
    run_imp(cfg(rounds=1), digits, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="diagnostics"):
        run_imp(cfg(rounds=1, diagnostics=False), digits, progress=False,
                checkpoint_dir=tmp_path)


def test_the_cli_flag_reaches_the_run(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "swamp_ext", "run", "--dataset", "digits",
                        "--rounds", "1", "--epochs", "2", "--particles", "2",
                        "--no-diagnostics", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["diagnostics"] is False
    assert saved["rounds"][0]["particle_acc"] == []
