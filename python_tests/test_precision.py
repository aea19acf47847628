"""Mixed precision (Config.precision): bf16 / fp16 autocast in the core's training forward, fp32
master weights, exact masks, fp16 loss scaling with skipped steps, bitwise resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from injected import Poisoned
from test_device_tier import run, same_run
from torch import nn

import swamp_ext
from swamp_ext import Config, datasets, run_imp

pytestmark = pytest.mark.filterwarnings("ignore:precision='fp16' on a CPU")


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def small(**kw):
    base = dict(model="lenet_300_100", method="swamp", particles=2, rounds=3, epochs=3,
                rewind_epochs=1, batch_size=64, lr=0.05, seed=5)
    base.update(kw)
    return Config(**base)


def check_exact(res):
    """fp32 master weights, exact sparsity, zeros under the masks."""
    state = res.state_dict()
    total = res.rounds[0].prunable
    for r in res.rounds:
        assert r.sparsity == 1 - r.remaining / total
    for name, v in state.items():
        if v.is_floating_point():
            assert v.dtype == torch.float32, name
            assert torch.isfinite(v).all(), name
    for name, m in res.masks.items():
        assert torch.all(state[name][~m] == 0), name
    assert sum(int(m.sum()) for m in res.masks.values()) == res.rounds[-1].remaining


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or fp16"):
        Config(precision="fp8")
    with pytest.raises(TypeError, match="precision"):
        Config(precision=16)


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
@pytest.mark.parametrize("model,mode", [("lenet_300_100", "sequential"),
                                        ("lenet_300_100", "stacked"),
                                        ("lenet_300_100", "threads"),
                                        ("conv4_small", "sequential"),
                                        ("conv4_small", "stacked")])
def test_bf16_trains_fp32_master_weights_with_exact_masks_on_every_path(digits, model, mode):
    fp32 = run(small(model=model, particle_mode=mode), digits)
    bf16 = run(small(model=model, particle_mode=mode, precision="bf16"), digits)
    check_exact(bf16)
    assert all(r.skipped_steps == 0 for r in bf16.rounds)  # no loss scaling in bf16
    # autocast did something: the losses differ from fp32, the learning does not
    assert bf16.rounds[0].train_loss != fp32.rounds[0].train_loss
    assert bf16.rounds[-1].test_acc > 0.8
    assert abs(bf16.rounds[-1].test_acc - fp32.rounds[-1].test_acc) < 0.06
    # same seed, same precision: the same run
    same_run(bf16, run(small(model=model, particle_mode=mode, precision="bf16"), digits))


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
def test_bf16_with_the_sparse_kernels_computes_them_in_fp32(digits):
    cfg = dict(rounds=4, sparse_density=1.0, precision="bf16")
    a = run(small(sparse_kernels="on", **cfg), digits)
    b = run(small(sparse_kernels="off", **cfg), digits)
    check_exact(a)
    assert a.rounds[-1].test_acc == pytest.approx(b.rounds[-1].test_acc, abs=0.05)


class Probe(nn.Module):
    """A user module that records the autocast state its forward ran under."""

    seen: list = []

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        if self.training and torch.is_grad_enabled():  # training steps (not the module check)
            Probe.seen.append((torch.is_autocast_enabled(x.device.type), h.dtype))
        return self.fc2(torch.relu(h))


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
@pytest.mark.parametrize("mode", ["sequential", "threads"])
def test_your_module_runs_under_autocast_in_training_only(digits, mode):
    Probe.seen = []
    torch.manual_seed(0)
    module = Probe()
    res = run(small(precision="bf16", particle_mode=mode, rounds=2), digits, model=module)
    check_exact(res)
    # every training step ran in bf16; the fp32 calls are the module checks before training
    on = [dt for a, dt in Probe.seen if a]
    assert len(on) >= 2 * 2 * 2 * (len(digits.x_train) // 64) and set(on) == {torch.bfloat16}
    assert len(Probe.seen) - len(on) <= 4
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert not torch.is_autocast_enabled("cpu")  # the caller's thread is as it was


def test_your_module_is_not_stacked_under_autocast(digits):
    # torch's vmap runs biased linear layers and convolutions outside autocast: a stacked module
    # would silently train in fp32, so stacking is refused by name (auto trains them unstacked)
    with pytest.raises(ValueError, match="outside autocast"):
        run(small(precision="bf16", particle_mode="stacked"), digits, model=Probe())


def test_fp16_skips_an_overflowing_step_counts_it_and_keeps_training(digits):
    torch.manual_seed(0)
    module = Poisoned()
    cfg = small(precision="fp16", particle_mode="sequential", particles=1, method="imp",
                rounds=2, epochs=3)
    Poisoned.calls, Poisoned.poison = 0, set()
    clean = run(cfg, digits, model=module)
    Poisoned.calls, Poisoned.poison = 0, {40, 41, 90}
    hit = run(cfg, digits, model=module)
    check_exact(hit)
    # the three poisoned steps were skipped on top of the clean run's own (scale) overflows
    assert sum(r.skipped_steps for r in hit.rounds) == \
        sum(r.skipped_steps for r in clean.rounds) + 3
    assert all(torch.isfinite(v).all() for v in hit.state_dict().values() if v.is_floating_point())
    assert hit.rounds[-1].test_acc > 0.8


def test_the_loss_scaler_follows_gradscalers_rule():
    scaler = swamp_ext._C.ops.LossScaler(init_scale=1024.0, growth_interval=2)
    g = [torch.full((20, 10), 2048.0), torch.tensor([float("inf")] * 10)]
    assert scaler.unscale(g) is False  # an overflow: the caller skips the step
    assert torch.equal(g[0], torch.full((20, 10), 2.0))  # unscaled in place
    scaler.update(True)
    assert scaler.scale == 512.0 and scaler.consecutive_skips == 1
    assert scaler.unscale([torch.ones(3)]) is True
    scaler.update(False)
    scaler.update(False)  # growth_interval clean steps: the scale grows
    assert scaler.scale == 1024.0 and scaler.growth_tracker == 0
    with pytest.raises(ValueError, match="backoff_factor"):
        swamp_ext._C.ops.LossScaler(backoff_factor=1.5)


def test_fp16_divergence_is_named(digits):
    cfg = small(precision="fp16", lr=1e9, weight_decay=0.0, momentum=0.0, rewind_epochs=0)
    with pytest.raises(swamp_ext.TrainingDivergedError, match="diverged"):
        run(cfg, digits)


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_interrupted_mixed_precision_run_resumes_bitwise(digits, tmp_path, precision):
    # conv4_small in bf16; fp16 convolutions are emulated on CPUs (slow): lenet_300_100 there
    model = "conv4_small" if precision == "bf16" else "lenet_300_100"
    cfg = small(model=model, precision=precision, rounds=2, epochs=3, particle_mode="sequential")
    ref = run(cfg, digits)
    count = [0]

    def stop(p):
        count[0] += 1
        if count[0] == 5:  # inside round 0
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_imp(cfg, digits, progress=stop, checkpoint_dir=tmp_path)
    same_run(ref, run(cfg, digits, checkpoint_dir=tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["precision"] == precision
    assert saved["evaluation_precision"] == "fp32"
    assert "skipped_steps" in saved["rounds"][0]


def test_fp32_checkpoint_refuses_a_bf16_resume_by_name(digits, tmp_path):
    run(small(rounds=1), digits, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="precision"):
        run(small(rounds=1, precision="bf16"), digits, checkpoint_dir=tmp_path)


def test_bf16_warns_on_a_cpu_without_bf16_instructions(digits, monkeypatch):
    from swamp_ext import precision as engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without bf16 instructions"):
        run(small(rounds=1, epochs=2, precision="bf16"), digits)
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(small(rounds=1, epochs=2, precision="bf16"), digits)


def test_the_cli_flag_reaches_the_run(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "swamp_ext", "run", "--dataset", "digits",
                        "--model", "lenet_300_100", "--method", "imp", "--rounds", "1",
                        "--epochs", "2", "--precision", "bf16", "--out", str(out),
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["precision"] == "bf16"
