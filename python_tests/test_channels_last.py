"""Config.channels_last: training forwards compute convolutions in the NHWC memory order while
the weights, masks, optimizer state, checkpoints and exports keep the logical (contiguous) one.
Equality is checked in float64 (differences would be structural, not rounding)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from test_speed_paths import _CONV_MODELS, pruned_step_case
from torch import nn

import swamp_ext
from swamp_ext import _C, Config, datasets, run_imp, testing
from swamp_ext.precision import cpu_has_native_bf16
from swamp_ext.running import plan_of

CL = torch.channels_last


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def small(**kw):
    base = dict(model="conv4", method="swamp", particles=2, rounds=2, epochs=2, batch_size=64,
                lr=0.05, seed=3)
    base.update(kw)
    return Config(**base)


def test_the_layer_computes_channels_last_only_inside_the_scope():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    ref = F.conv2d(x, w, stride=1, padding=1)
    on = testing.conv2d_forward(x, w, 1, 1, True)
    off = testing.conv2d_forward(x, w, 1, 1, False)
    assert on.is_contiguous(memory_format=CL) and not on.is_contiguous()
    assert off.is_contiguous()
    torch.testing.assert_close(on, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(off, ref, rtol=1e-12, atol=1e-12)
    assert not _C.ops.channels_last_enabled()  # the scope ended with the call


@pytest.mark.parametrize("sparse", ["off", "on"])
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("name,shape", _CONV_MODELS)
def test_a_float64_step_is_the_same_channels_last(name, shape, stacked, sparse):
    # every conv model of the zoo, one model per particle and stacked, dense and on the sparse
    # kernels (which compute NCHW): logits and weight gradients of one pruned float64 step
    n = 2
    states, _, masks, x, y = pruned_step_case(name, shape, n, 3, seed=2, pruned=0.7)
    ref_logits, ref_grads = testing.particles_forward_backward(
        name, shape, 10, states, x, y, stacked=stacked, masks=masks, sparse_kernels=sparse)
    logits, grads = testing.particles_forward_backward(
        name, shape, 10, states, x, y, stacked=stacked, masks=masks, sparse_kernels=sparse,
        channels_last=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    for p in range(n):
        assert grads[p].keys() == ref_grads[p].keys()
        for k, ref in ref_grads[p].items():
            got = grads[p][k]
            assert got.is_contiguous(), k  # the gradients reach the parameters in their order
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10, msg=k)


def agreement(a, b):
    same = sum(int((a.masks[k] == b.masks[k]).sum()) for k in a.masks)
    return same / sum(m.numel() for m in a.masks.values())


def check_stored_in_logical_order(res):
    state = res.state_dict()
    for name, v in state.items():
        assert v.is_contiguous(), name
        assert v.dtype != torch.float64
    for name, m in res.masks.items():
        assert m.is_contiguous(), name
        assert torch.all(state[name][~m] == 0), name
    assert sum(int(m.sum()) for m in res.masks.values()) == res.rounds[-1].remaining


@pytest.mark.parametrize("mode", ["stacked", "sequential", "threads"])
def test_a_channels_last_run_prunes_as_the_contiguous_one(digits, mode):
    off = run_imp(small(particle_mode=mode, channels_last=False), digits, progress=False)
    on = run_imp(small(particle_mode=mode, channels_last=True), digits, progress=False)
    assert off.channels_last is False and on.channels_last is True
    check_stored_in_logical_order(on)
    # float32 rounding of another kernel is the only difference (the float64 step above is
    # exact); training amplifies it as it amplifies any rounding: the same contiguous run on 1
    # thread instead of 2 agrees with itself on 99.1% of these masks
    assert agreement(on, off) >= 0.98
    for a, b in zip(on.rounds, off.rounds):
        assert a.sparsity == b.sparsity
        assert a.train_loss == pytest.approx(b.train_loss, rel=0.05)
        assert abs(a.test_acc - b.test_acc) <= 0.03


def test_the_choice_is_recorded_saved_and_resumed(digits, tmp_path):
    ref = run_imp(small(channels_last=True, rounds=3), digits, progress=False)
    run_imp(small(channels_last=True, rounds=2), digits, progress=False, checkpoint_dir=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["channels_last"] is True and saved["config"]["channels_last"] is True
    more = run_imp(small(channels_last=True, rounds=3), digits, progress=False,
                   checkpoint_dir=tmp_path)
    for k, v in ref.state_dict().items():
        assert torch.equal(more.state_dict()[k], v), k
    assert swamp_ext.load_run(tmp_path).channels_last is True
    with pytest.raises(ValueError, match="channels_last"):
        run_imp(small(channels_last=False, rounds=3), digits, progress=False,
                checkpoint_dir=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    saved["channels_last"] = "yes"
    (tmp_path / "results.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="channels_last"):
        swamp_ext.load_run(tmp_path)


def test_auto_picks_by_model_precision_and_device():
    def on(model, **kw):
        cfg = Config(model=model, **kw)
        return plan_of(cfg, [1, 8, 8], 10).channels_last

    assert on("conv4") is False  # fp32
    assert on("lenet_300_100", precision="bf16") is False  # no convolution
    assert on("conv4", precision="bf16") is cpu_has_native_bf16()
    assert on("conv4", precision="fp16") is False  # fp16 is emulated on CPUs
    assert on("conv4", channels_last=True) is True
    assert on("lenet_300_100", channels_last=True) is True  # as asked: nothing to do
    assert on("conv4", precision="bf16", channels_last=False) is False


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_a_bad_value_names_the_choices(value):
    with pytest.raises(ValueError, match=r"Config.channels_last.*'auto', True or False"):
        Config(channels_last=value)


class BnCnn(nn.Module):
    """A user's conv net with batch norm; records the memory order its convolutions see."""

    seen: list = []

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        h = self.c2(h)
        if self.training and torch.is_grad_enabled():
            BnCnn.seen.append(h.is_contiguous(memory_format=CL) and not h.is_contiguous())
        h = F.max_pool2d(F.relu(self.b2(h)), 2)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("mode", ["sequential", "threads"])
def test_your_conv_module_trains_channels_last(digits, mode):
    torch.manual_seed(0)
    module = BnCnn()
    BnCnn.seen = []
    off = run_imp(small(particle_mode=mode, channels_last=False), digits, model=module,
                  progress=False)
    assert BnCnn.seen and not any(BnCnn.seen)
    BnCnn.seen = []
    on = run_imp(small(particle_mode=mode, channels_last=True), digits, model=module,
                 progress=False)
    # the ticket, then 2 rounds x 2 particles x 1 epoch after the rewind point
    assert len(BnCnn.seen) >= 2 * 2 * (len(digits.x_train) // 64) and all(BnCnn.seen)
    assert on.channels_last is True
    check_stored_in_logical_order(on)
    assert agreement(on, off) >= 0.98  # float32 rounding, as above
    assert all(p.is_contiguous() for p in module.parameters())  # yours is untouched
    torch_module = on.to_torch()
    assert torch_module.c1.weight.is_contiguous()
    assert torch.equal(torch_module.c1.weight, on.state_dict()["c1.weight"])


def test_your_module_is_not_stacked_channels_last(digits):
    with pytest.raises(ValueError, match="channels_last=True"):
        run_imp(small(particle_mode="stacked", channels_last=True), digits, model=BnCnn(),
                progress=False)


class TinyTransformer(nn.Module):
    """Rows of an 8x8 digit as 8 tokens: one encoder layer (attention, layer norm, dropout off)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.pos = nn.Parameter(torch.zeros(1, 8, 32))
        self.enc = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = self.enc(self.embed(x.reshape(x.shape[0], 8, 8)) + self.pos)
        return self.head(h.mean(1))


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
def test_a_small_transformer_trains_under_bf16_autocast(digits):
    torch.manual_seed(0)
    res = run_imp(small(precision="bf16", rounds=2), digits, model=TinyTransformer(),
                  progress=False)
    assert res.channels_last is False  # auto: no convolution
    check_stored_in_logical_order(res)
    assert all(v.dtype == torch.float32 for v in res.state_dict().values()
               if v.is_floating_point())
    assert res.rounds[-1].test_acc > 0.5


def test_the_cli_flag_reaches_the_run(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "swamp_ext", "run", "--dataset", "digits",
                        "--model", "conv4", "--rounds", "1", "--epochs", "2", "--particles",
                        "2", "--channels-last", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["channels_last"] is True and saved["channels_last"] is True
    assert "fp32, channels-last" in r.stdout.splitlines()[0]  # the run says what it picked
    bad = subprocess.run([sys.executable, "-m", "swamp_ext", "run", "--channels-last", "maybe"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--channels-last" in bad.stderr


def test_a_torch_dataset_pipeline_trains_channels_last(digits):
    from torch.utils.data import TensorDataset

    train = TensorDataset(digits.x_train, digits.y_train)
    test = TensorDataset(digits.x_test, digits.y_test)
    data = datasets.from_torch(train, test, num_classes=10)
    off = run_imp(small(particle_mode="sequential", channels_last=False), data, progress=False)
    on = run_imp(small(particle_mode="sequential", channels_last=True), data, progress=False)
    assert on.channels_last is True
    check_stored_in_logical_order(on)
    assert agreement(on, off) >= 0.98  # float32 rounding, as above


@pytest.mark.filterwarnings("ignore:precision='bf16' on a CPU")
def test_your_bn_cnn_trains_under_bf16_autocast_channels_last(digits):
    torch.manual_seed(0)
    res = run_imp(small(precision="bf16", channels_last=True), digits, model=BnCnn(),
                  progress=False)
    check_stored_in_logical_order(res)
    assert all(v.dtype == torch.float32 for v in res.state_dict().values()
               if v.is_floating_point())
    assert res.rounds[-1].test_acc > 0.5
