"""Any torch.nn.Module as the model: run_imp(config, data, model=module)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import swamp_ext
from swamp_ext import datasets, models
from swamp_ext.modules import default_prunable


@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist5k")


@pytest.fixture(scope="module")
def mnist_small(mnist):
    return datasets.from_arrays(mnist.x_train[:512], mnist.y_train[:512], mnist.x_test[:256],
                                mnist.y_test[:256], num_classes=10, name="mnist512")


class BnCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 7 * 7, 32), nn.ReLU(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 4)
        return self.head(x)


class TinyViT(nn.Module):
    """Patch embedding, one pre-norm attention block (nn.MultiheadAttention), mean pooling."""

    def __init__(self, dim: int = 32, patch: int = 7) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        n = (28 // patch) ** 2
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return self.out(t.mean(1))


def cfg(**kw):
    base = dict(method="swamp", particles=2, rounds=2, epochs=2, rewind_epochs=1, lr=0.02,
                single_particle_rounds=0, particle_mode="sequential")
    base.update(kw)
    return swamp_ext.Config(**base)


def test_custom_cnn_with_batchnorm_imp_and_swamp(mnist):
    torch.manual_seed(0)
    net = BnCnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for method in ("imp", "swamp"):
        r = swamp_ext.run_imp(cfg(method=method), mnist, model=net)
        assert r.rounds[-1].test_acc > 0.75, (method, r.rounds[-1].test_acc)
        assert set(r.masks) == {"conv.weight", "head.1.weight", "head.3.weight"}
        total = sum(m.numel() for m in r.masks.values())
        kept = sum(int(m.sum()) for m in r.masks.values())
        assert kept == total - round(0.2 * total)  # round 1 trains under one 20% pruning
        assert r.rounds[-1].sparsity == pytest.approx(1 - kept / total, abs=0)
        sd = r.state_dict()
        assert set(sd) == set(net.state_dict())
        fresh = BnCnn()
        fresh.load_state_dict(sd, strict=True)
        for k, m in r.masks.items():  # pruned weights are zero in the final model
            assert not sd[k][~m].any()
        # to_torch: a copy of the user's module with the final weights, in eval mode
        out = r.to_torch()
        assert isinstance(out, BnCnn) and not out.training and out is not net
        x = mnist.x_test[:64]
        fresh.eval()
        assert torch.equal(out(x), fresh(x))
    # the user's module is untouched
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert r.to_json()["config"]["model"].endswith("BnCnn")
    assert r.to_json()["module"]["prunable"] == sorted(r.masks, key=list(sd).index)


def test_small_transformer_imp_and_swamp(mnist):
    torch.manual_seed(1)
    vit = TinyViT()
    names = default_prunable(vit)
    # conv / linear weights and attention's projections; never norms, biases, embeddings
    assert names == ["patch.weight", "attn.in_proj_weight", "attn.out_proj.weight",
                     "mlp.0.weight", "mlp.2.weight", "out.weight"]
    for method in ("imp", "swamp"):
        r = swamp_ext.run_imp(cfg(method=method, lr=0.1, epochs=3), mnist, model=vit)
        assert r.rounds[-1].test_acc > 0.4, (method, r.rounds[-1].test_acc)  # chance: 0.1
        assert set(r.masks) == set(names)
        assert r.state_dict()["pos"].count_nonzero() == r.state_dict()["pos"].numel()
    TinyViT().load_state_dict(r.state_dict(), strict=True)


@pytest.mark.parametrize("name, mode", [("lenet_300_100", "sequential"),
                                        ("lenet_300_100", "threads"), ("conv2", "sequential")])
def test_pytorch_twin_of_a_zoo_model_gives_the_zoo_run(mnist_small, name, mode):
    """The strongest check: the zoo model's pure-PyTorch twin, from the zoo's θ_0, run as a
    Python module, finds the zoo run's masks and accuracies (one after the other, and side by
    side on threads, both as the zoo runs: bitwise)."""
    data = mnist_small
    c = cfg(model=name, epochs=2, rounds=3, particle_mode=mode, lr=0.05)
    zoo = swamp_ext.run_imp(c, data)
    state, _ = models.create(name, data.input_shape, data.num_classes, seed=c.seed)
    module = models.to_torch(name, state, data.input_shape, data.num_classes)
    mine = swamp_ext.run_imp(c, data, model=module)
    for k in zoo.masks:
        assert torch.equal(zoo.masks[k], mine.masks[k]), k
    for a, b in zip(zoo.rounds, mine.rounds):
        assert a.test_acc == b.test_acc and a.test_nll == b.test_nll
        assert a.particle_acc == b.particle_acc
    for k, v in zoo.state_dict().items():
        assert torch.equal(v, mine.state_dict()[k]), k


def test_stacked_vmap_particles_match_sequential(mnist_small):
    """Particles stacked with torch.func.vmap (batch norm included) train as they do one after
    the other, up to float rounding."""
    torch.manual_seed(2)
    net = BnCnn()
    seq = swamp_ext.run_imp(cfg(particles=3, rounds=2), mnist_small, model=net)
    stk = swamp_ext.run_imp(cfg(particles=3, rounds=2, particle_mode="stacked"), mnist_small,
                            model=net)
    for a, b in zip(seq.rounds, stk.rounds):
        assert a.test_acc == pytest.approx(b.test_acc, abs=0.02)
        assert a.particle_nll == pytest.approx(b.particle_nll, rel=1e-3)
    sa, sb = seq.state_dict(), stk.state_dict()
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.allclose(sa[k], sb[k], rtol=1e-3, atol=1e-4), k


def test_models_create_gives_the_runs_initial_weights(mnist_small):
    c = cfg(model="lenet_300_100", method="imp", rounds=1, epochs=2, rewind_epochs=0, seed=7)
    seen = {}
    swamp_ext.run_imp(c, mnist_small, on_ticket=lambda t: seen.update(t))
    state, _ = models.create("lenet_300_100", mnist_small.input_shape, 10, seed=7)
    other, _ = models.create("lenet_300_100", mnist_small.input_shape, 10, seed=8)
    for k, v in state.items():
        assert torch.equal(seen[k], v), k
    assert not torch.equal(other["fc1.weight"], state["fc1.weight"])


def test_loss_fn_and_logits_objects(mnist_small):
    torch.manual_seed(3)

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(),
                                      nn.Linear(64, 10))

        def forward(self, x):
            return Out(self.body(x))

    net = Wrapped()
    plain = swamp_ext.run_imp(cfg(), mnist_small, model=net)
    # cross-entropy written by the user is the default loss: the same run, bitwise
    ce = swamp_ext.run_imp(cfg(), mnist_small, model=net,
                           loss_fn=lambda out, y: F.cross_entropy(out.logits, y))
    assert [r.test_nll for r in ce.rounds] == [r.test_nll for r in plain.rounds]
    # another loss changes training; stacked particles use it too
    calls = []

    def smooth(out, y):
        calls.append(1)
        return F.cross_entropy(out.logits, y, label_smoothing=0.2)

    sm = swamp_ext.run_imp(cfg(), mnist_small, model=net, loss_fn=smooth)
    assert calls and [r.test_nll for r in sm.rounds] != [r.test_nll for r in plain.rounds]
    st = swamp_ext.run_imp(cfg(particle_mode="stacked"), mnist_small, model=net, loss_fn=smooth)
    assert st.rounds[-1].test_nll == pytest.approx(sm.rounds[-1].test_nll, rel=1e-2)
    with pytest.raises(TypeError, match="loss_fn returned"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net, loss_fn=lambda out, y: out.logits)


def test_prunable_selection(mnist_small):
    torch.manual_seed(4)
    net = BnCnn()
    r = swamp_ext.run_imp(cfg(rounds=2), mnist_small, model=net, prunable=["head.1.weight"])
    assert set(r.masks) == {"head.1.weight"}
    r = swamp_ext.run_imp(cfg(rounds=1), mnist_small, model=net,
                          prunable=lambda name, p: name.startswith("head") and p.dim() == 2)
    assert set(r.masks) == {"head.1.weight", "head.3.weight"}
    with pytest.raises(ValueError, match="not a parameter"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net, prunable=["head.9.weight"])
    with pytest.raises(ValueError, match="empty"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net, prunable=[])
    with pytest.raises(ValueError, match="selected no parameter"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net, prunable=lambda n, p: False)
    with pytest.raises(ValueError, match="apply to a run given model"):
        swamp_ext.run_imp(cfg(), mnist_small, prunable=["fc1.weight"])


def _scale_in_place(p):
    with torch.no_grad():
        p.mul_(1.0)
    return 0


class _Forward(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


@pytest.mark.parametrize("module, error, match", [
    (nn.Sequential(nn.Flatten(), nn.BatchNorm1d(784), nn.Embedding(3, 4)), ValueError,
     "no Conv or Linear weight"),
    (_Forward(lambda m, x: m.fc(x)), RuntimeError, "forward fails on a batch"),
    (_Forward(lambda m, x: m.fc(x.flatten(1))[:, :5]), ValueError, r"expected logits \(8, 10\)"),
    (_Forward(lambda m, x: m.fc(x.flatten(1)).long()), TypeError, "logits"),
    (_Forward(lambda m, x: (m.fc(x.flatten(1)), 1)), TypeError, "expected a tensor of logits"),
    (_Forward(lambda m, x: _scale_in_place(m.fc.weight) + m.fc(x.flatten(1))), ValueError,
     "changes its parameter 'fc.weight' in place"),
    ("not a module", TypeError, "torch.nn.Module"),
])
def test_bad_modules_get_clear_errors(mnist_small, module, error, match):
    with pytest.raises(error, match=match):
        swamp_ext.run_imp(cfg(), mnist_small, model=module)


def test_bad_parameters_get_clear_errors(mnist_small):
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    net.register_parameter("count", nn.Parameter(torch.zeros(3, dtype=torch.long),
                                                 requires_grad=False))
    with pytest.raises(TypeError, match="'count' is torch.int64"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Linear(10, 10, device="meta"))
    with pytest.raises(ValueError, match="several devices"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net)
    from torch.nn.utils import prune

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    prune.l1_unstructured(net[1], "weight", 0.5)
    with pytest.raises(ValueError, match="torch.nn.utils.prune"):
        swamp_ext.run_imp(cfg(), mnist_small, model=net)
    lazy = nn.Sequential(nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match="lazy module"):
        swamp_ext.run_imp(cfg(), mnist_small, model=lazy)


class _Flaky(nn.Module):
    """Fails in training after `fail_after` training forwards (counted across its copies)."""

    calls = 0
    fail_after = math.inf

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        if self.training:
            type(self).calls += 1
            if type(self).calls > type(self).fail_after:
                raise ArithmeticError("the user's forward broke")
        return self.fc(x.flatten(1))


def test_forward_failing_mid_run_loses_nothing_and_resume_is_bitwise(mnist_small, tmp_path):
    torch.manual_seed(5)
    net = _Flaky()
    c = cfg(rounds=3)
    _Flaky.calls, _Flaky.fail_after = 0, math.inf
    whole = swamp_ext.run_imp(c, mnist_small, model=net)
    per_round = _Flaky.calls // 3
    _Flaky.calls, _Flaky.fail_after = 0, int(per_round * 1.5)  # inside round 1
    done = []
    with pytest.raises(ArithmeticError, match="the user's forward broke"):
        swamp_ext.run_imp(c, mnist_small, model=net, checkpoint_dir=tmp_path,
                          on_round=done.append)
    assert [r.round for r in done] == [0]
    _Flaky.calls, _Flaky.fail_after = 0, math.inf
    resumed = swamp_ext.run_imp(c, mnist_small, model=net, checkpoint_dir=tmp_path)
    assert _Flaky.calls < 2.5 * per_round  # round 0 was not trained again
    assert [r.test_nll for r in resumed.rounds] == [r.test_nll for r in whole.rounds]
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_checkpoint_of_another_architecture_names_the_parameter(mnist_small, tmp_path):
    a = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    swamp_ext.run_imp(cfg(rounds=1), mnist_small, model=a, checkpoint_dir=tmp_path)
    b = nn.Sequential(nn.Flatten(), nn.Linear(784, 48), nn.ReLU(), nn.Linear(48, 10))
    with pytest.raises(ValueError, match=r"parameter '1.weight' is \[32, 784\] Float in the "
                                         r"checkpoint, \[48, 784\] Float in the model"):
        swamp_ext.run_imp(cfg(rounds=1), mnist_small, model=b, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="model: checkpoint python:torch.nn.modules.container"
                                         ".Sequential, now lenet_300_100"):
        swamp_ext.run_imp(cfg(rounds=1, model="lenet_300_100"), mnist_small,
                          checkpoint_dir=tmp_path)


def test_unstackable_module_falls_back_with_a_reason(mnist_small):
    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)
            self.temperature = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return self.fc(x.flatten(1)) / self.temperature

    with pytest.raises(ValueError, match="cannot be stacked: parameter 'temperature' is a scalar"):
        swamp_ext.run_imp(cfg(particle_mode="stacked"), mnist_small, model=Scalar())
    r = swamp_ext.run_imp(cfg(), mnist_small, model=Scalar())  # sequential: fine
    assert r.rounds[-1].test_acc > 0.5


def test_safetensors_cpp_and_python_read_each_other(tmp_path):
    from safetensors.torch import load_file, save_file

    from swamp_ext import _C

    g = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(3, 4, generator=g), "m": torch.rand(5, generator=g) > 0.5,
               "i": torch.arange(6, dtype=torch.int64).view(2, 3),
               "h": torch.randn(2, generator=g).to(torch.bfloat16), "e": torch.zeros(0, 2)}
    _C.io.save_safetensors(str(tmp_path / "c.safetensors"), tensors, {"k": "v \"q\""})
    back = load_file(str(tmp_path / "c.safetensors"))
    save_file(tensors, str(tmp_path / "p.safetensors"), metadata={"who": "python"})
    mine, meta = _C.io.load_safetensors(str(tmp_path / "p.safetensors"))
    assert meta == {"who": "python"}
    for k, v in tensors.items():
        assert torch.equal(back[k], v) and back[k].dtype == v.dtype, k
        assert torch.equal(mine[k], v) and mine[k].dtype == v.dtype, k
    raw = (tmp_path / "p.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    for damaged, match in [
        (raw[:5], "too short"),
        ((10**9).to_bytes(8, "little") + raw[8:], "does not fit"),
        (raw[:40], "does not fit|damaged|outside"),
        (raw.replace(b'"F32"', b'"F99"'), "unsupported dtype F99"),
        (raw[:-8], "outside the file"),
        (raw + b"\0" * 16, "16 bytes after the last tensor"),
    ]:
        bad.write_bytes(damaged)
        with pytest.raises(ValueError, match=match):
            _C.io.load_safetensors(str(bad))
