"""Sparse inference: the core's swamp:: operators against torch's dense ones, the sparse modules
of every zoo model and of a user's module, torch.compile / torch.export / inference_mode,
compressed saving and loading, and a run's models from the Result, the run folder and a CSR
file."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from test_models import SHAPES
from torch import nn

import swamp_ext
from swamp_ext import models
from swamp_ext.inference import (
    SparseConv2d,
    SparseLinear,
    choices,
    from_csr,
    sparse_conv2d,
    sparse_linear,
    sparsify,
    state_bytes,
)
from swamp_ext.inference.convert import AUTO_MARGIN


def pruned(t: torch.Tensor, density: float, g: torch.Generator) -> torch.Tensor:
    return t * (torch.rand(t.shape, generator=g) < density)


def csr(w: torch.Tensor, index=torch.int64):
    m = w.reshape(w.shape[0], -1)
    keep = m != 0
    rows, cols = keep.nonzero(as_tuple=True)
    crow = torch.zeros(m.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=m.shape[0]).cumsum(0)
    return crow.to(index), cols.to(index), m[rows, cols].contiguous()


# ---- the operators -------------------------------------------------------------------------

@pytest.mark.parametrize("index", [torch.int32, torch.int64])
@pytest.mark.parametrize("lead", [(1,), (5,), (64,), (3, 7), (0,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_linear_equals_the_dense_product(gen, index, lead, dtype):
    w = pruned(torch.randn(37, 53, generator=gen, dtype=dtype), 0.1, gen)
    w[5] = 0  # an empty row
    b = torch.randn(37, generator=gen, dtype=dtype)
    x = torch.randn(*lead, 53, generator=gen, dtype=dtype)
    crow, col, val = csr(w, index)
    for bias in (b, None):
        y = sparse_linear(x, crow, col, val, bias, 53)
        assert y.shape == (*lead, 37)
        torch.testing.assert_close(y, F.linear(x, w, bias))


def test_sparse_linear_reads_any_input_layout(gen):
    w = pruned(torch.randn(20, 30, generator=gen), 0.2, gen)
    crow, col, val = csr(w)
    base = torch.randn(30, 16, generator=gen)
    for x in (base.t(), base.t().contiguous(), torch.randn(16, 60, generator=gen)[:, ::2]):
        torch.testing.assert_close(sparse_linear(x, crow, col, val, None, 30), x @ w.t())
    # a chain of sparse layers: the output of one is read by the next as it is
    h = sparse_linear(base.t(), crow, col, val, None, 30).relu()
    w2 = pruned(torch.randn(9, 20, generator=gen), 0.3, gen)
    torch.testing.assert_close(sparse_linear(h, *csr(w2), None, 20), h @ w2.t())


@pytest.mark.parametrize("stride, padding, k", [
    (1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 1), (3, 2, 5), ((1, 2), (0, 1), (3, 1)),
    ((2, 1), (1, 0), (2, 3)),
])
@pytest.mark.parametrize("batch", [1, 3, 37])  # 37: blocks of images, the last one partial
def test_sparse_conv2d_equals_torch_conv2d(gen, stride, padding, k, batch):
    k = (k, k) if isinstance(k, int) else k
    w = pruned(torch.randn(6, 4, *k, generator=gen), 0.3, gen)
    b = torch.randn(6, generator=gen)
    x = torch.randn(batch, 4, 11, 10, generator=gen)
    s2 = stride if isinstance(stride, tuple) else (stride, stride)
    p2 = padding if isinstance(padding, tuple) else (padding, padding)
    for bias in (b, None):
        y = sparse_conv2d(x, *csr(w), bias, w.shape, s2, p2)
        torch.testing.assert_close(y, F.conv2d(x, w, bias, stride=s2, padding=p2))
    # channels-last and float64 inputs
    xl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(sparse_conv2d(xl, *csr(w), b, w.shape, s2, p2),
                               F.conv2d(x, w, b, stride=s2, padding=p2))
    wd = w.double()
    torch.testing.assert_close(sparse_conv2d(x.double(), *csr(wd), None, w.shape, s2, p2),
                               F.conv2d(x.double(), wd, None, stride=s2, padding=p2))


def test_operators_refuse_bad_input_by_name(gen):
    w = pruned(torch.randn(8, 10, generator=gen), 0.5, gen)
    crow, col, val = csr(w)
    x = torch.randn(4, 10)
    cases = [
        ((x, crow, col.clone().fill_(10), val, None, 10), "col_indices must lie in"),
        ((x, crow, col.clone().fill_(-1), val, None, 10), "col_indices must lie in"),
        ((x, crow[:-1], col, val, None, 10), "crow_indices must run from 0 to nnz"),
        ((x, crow.flip(0), col, val, None, 10), "crow_indices must run from 0"),
        ((x, crow, col.int(), val, None, 10), "both be int32 or both int64"),
        ((x, crow, col, val[:-1], None, 10), "col_indices but"),
        ((torch.randn(4, 9), crow, col, val, None, 10), "expected input"),
        ((x.half(), crow, col, val, None, 10), "float32 or float64"),
        ((x.double(), crow, col, val, None, 10), "values are Float"),
        ((x, crow, col, val, torch.zeros(3), 10), "bias must be"),
    ]
    bad = crow.clone()
    bad[3] = int(crow[4]) + 1  # rows 2 and 3 claim a negative count
    cases.append(((x, bad, col, val, None, 10), "non-decreasing"))
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            sparse_linear(*args)
    wc = pruned(torch.randn(4, 2, 3, 3, generator=gen), 0.5, gen)
    xc = torch.randn(1, 2, 5, 5)
    for args, msg in [
        ((xc, *csr(wc), None, [4, 2, 3, 3], [0, 1], [0, 0]), "strides must be >= 1"),
        ((xc, *csr(wc), None, [4, 3, 3, 3], [1, 1], [0, 0]), "expected input"),
        ((torch.randn(1, 2, 2, 2), *csr(wc), None, [4, 2, 3, 3], [1, 1], [0, 0]),
         "smaller than the 3x3 kernel"),
        ((xc, *csr(wc), None, [4, 2, 3], [1, 1], [0, 0]), "weight_shape has 4 entries"),
        ((xc, *csr(wc), None, [3, 2, 3, 3], [1, 1], [0, 0]), "crow_indices must have 4"),
    ]:
        with pytest.raises(ValueError, match=msg):
            torch.ops.swamp.sparse_conv2d(*args)


# ---- modules -------------------------------------------------------------------------------

def pruned_zoo(name: str, density: float, seed: int = 0):
    shape = SHAPES[name]
    state, prunable = models.create(name, shape, 7, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for k in prunable:
        state[k] = pruned(state[k], density, g)
    for k, v in state.items():  # batch-norm statistics that matter in eval mode
        if k.endswith("running_mean"):
            state[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
    return shape, state, prunable


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_zoo_model_runs_sparse_with_the_dense_outputs(name):
    shape, state, prunable = pruned_zoo(name, 0.1)
    dense = models.to_torch(name, state, shape, 7)
    sparse = sparsify(dense, sparse=True)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = dense(x), sparse(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    made = {c.name + ".weight": c for c in choices(sparse)}
    assert set(made) == set(prunable)  # every prunable layer considered
    for n, c in made.items():
        layer = sparse.get_submodule(c.name)
        assert c.sparse == isinstance(layer, (SparseLinear, SparseConv2d)), c
        if c.sparse:
            assert torch.equal(layer.dense_weight(), state[n])
            assert abs(c.density - float((state[n] != 0).float().mean())) < 1e-6
        else:  # only convolutions the kernel does not compute stay dense under sparse=True
            assert c.kind == "conv2d" and "groups" in c.reason
    assert any(c.sparse for c in made.values())
    assert state_bytes(sparse) < state_bytes(dense) * 0.5
    assert not any(k.endswith(".weight") and k in made for k in sparse.state_dict())


class Odd(nn.Module):
    """Layers the sparse kernels take and layers they do not."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding="same")
        self.grouped = nn.Conv2d(8, 8, 3, groups=2, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, dilation=2, padding=2)
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.fc = nn.Linear(8 * 6 * 6, 5, bias=False)
        self.head = Scaled(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reflect(self.dilated(self.grouped(self.a(x).relu())))
        return self.head(self.fc(x.flatten(1)))


class Scaled(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # computes something else than Linear
        return 2 * super().forward(x)


def test_a_users_module_keeps_what_the_kernels_do_not_compute_and_says_why(gen):
    m = Odd().eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.copy_(pruned(p, 0.2, gen))
    s = sparsify(m, sparse=True)
    by = {c.name: c for c in choices(s)}
    assert set(by) == {"a", "grouped", "dilated", "reflect", "fc"}  # not the subclass "head"
    assert by["a"].sparse and by["fc"].sparse and isinstance(s.a, SparseConv2d)
    assert "groups=2" in by["grouped"].reason and "dilation" in by["dilated"].reason
    assert "reflect" in by["reflect"].reason and type(s.head) is Scaled
    x = torch.randn(2, 3, 6, 6, generator=gen)
    torch.testing.assert_close(s(x), m(x))
    assert isinstance(m.a, nn.Conv2d) and isinstance(m.fc, nn.Linear)  # the original untouched
    # masks name the layers to consider
    only = sparsify(m, sparse=True, masks={"fc.weight": torch.ones(1)})
    assert [c.name for c in choices(only)] == ["fc"]
    assert isinstance(only.fc, SparseLinear) and isinstance(only.a, nn.Conv2d)
    assert [c.sparse for c in choices(sparsify(m, sparse=False))] == [False] * 5


def test_sparsify_refuses_bad_requests():
    m = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="sparse must be True, False, 'auto' or '2:4'"):
        sparsify(m, sparse="yes")
    with torch.no_grad():
        m[0].weight[0] = 0
    with pytest.raises(ValueError, match="give example_input"):
        sparsify(m, sparse="auto")
    with pytest.raises(ValueError, match="batch_sizes must be positive"):
        sparsify(m, sparse="auto", example_input=torch.zeros(1, 4), batch_sizes=[0])
    with pytest.raises(TypeError, match="takes an nn.Module"):
        sparsify("net")


def test_auto_keeps_a_layer_dense_unless_it_measured_faster_at_every_batch_size(gen):
    shape, state, _ = pruned_zoo("lenet_300_100", 0.02)
    dense = models.to_torch("lenet_300_100", state, shape, 7)
    # an unpruned layer is never a candidate, whatever the timings
    with torch.no_grad():
        dense.fc3.weight.copy_(torch.randn(dense.fc3.weight.shape, generator=gen))
    s = sparsify(dense, sparse="auto", example_input=torch.zeros(1, *shape), batch_sizes=(1, 8))
    by = {c.name: c for c in choices(s)}
    assert by["fc3"].reason == "not pruned" and not by["fc3"].sparse
    for c in (by["fc1"], by["fc2"]):
        assert set(c.speedup) == {1, 8} and all(v > 0 for v in c.speedup.values())
        if c.sparse:
            assert min(c.speedup.values()) >= 1 / AUTO_MARGIN, c
        else:  # slower alone, or taken back because the whole module was slower with it
            assert min(c.speedup.values()) < 1 / AUTO_MARGIN or "whole module" in c.reason, c
        assert isinstance(s.get_submodule(c.name), SparseLinear) == c.sparse
    x = torch.randn(8, *shape, generator=gen)
    torch.testing.assert_close(s(x), dense(x))


# ---- torch.compile, torch.export, saving ---------------------------------------------------

@pytest.mark.parametrize("name", ["lenet_300_100", "resnet20"])
def test_sparse_modules_compile_and_export_without_falling_back(name, tmp_path):
    shape, state, _ = pruned_zoo(name, 0.05)
    dense = models.to_torch(name, state, shape, 7)
    s = sparsify(dense, sparse=True)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = dense(x)
        torch.testing.assert_close(s(x), ref, rtol=1e-4, atol=1e-5)
    compiled = torch.compile(s, fullgraph=True, backend="aot_eager")  # a graph break would raise
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref, rtol=1e-4, atol=1e-5)
    batch = torch.export.Dim("batch", min=2, max=512)
    ep = torch.export.export(s, (x,), dynamic_shapes=({0: batch},))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert any("swamp.sparse_" in t for t in targets)
    assert not any(t.startswith("aten.linear") or t.startswith("aten.conv") for t in targets)
    path = tmp_path / "model.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path).module()
    x2 = torch.randn(9, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x2), dense(x2), rtol=1e-4, atol=1e-5)


def test_inductor_compiles_a_sparse_module():
    shape, state, _ = pruned_zoo("lenet_300_100", 0.05)
    dense = models.to_torch("lenet_300_100", state, shape, 7)
    s = sparsify(dense, sparse=True)
    x = torch.randn(4, *shape)
    compiled = torch.compile(s, fullgraph=True)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), dense(x), rtol=1e-4, atol=1e-5)


def test_the_state_dict_is_compressed_and_loads_back(tmp_path, gen):
    shape, state, _ = pruned_zoo("conv4_small", 0.05)
    dense = models.to_torch("conv4_small", state, shape, 7)
    s = sparsify(dense, sparse=True)
    sd = s.state_dict()
    assert "fc1.values" in sd and "fc1.weight" not in sd and sd["fc1.col_indices"].dtype == \
        torch.int32
    buf = io.BytesIO()
    torch.save(sd, buf)
    dense_buf = io.BytesIO()
    torch.save(dense.state_dict(), dense_buf)
    assert len(buf.getvalue()) < 0.5 * len(dense_buf.getvalue())
    buf.seek(0)
    other = sparsify(models.to_torch("conv4_small", state, shape, 7), sparse=True)
    with torch.no_grad():
        for t in other.state_dict().values():
            if t.is_floating_point():
                t.zero_()
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(3, *shape, generator=gen)
    torch.testing.assert_close(other(x), dense(x), rtol=1e-4, atol=1e-5)
    whole = io.BytesIO()  # the whole module, pickled (its classes importable from swamp_ext)
    torch.save(s, whole)
    whole.seek(0)
    torch.testing.assert_close(torch.load(whole, weights_only=False)(x), dense(x), rtol=1e-4,
                               atol=1e-5)
    # back to a dense torch layer
    assert torch.equal(s.fc1.to_dense().weight, dense.fc1.weight)
    torch.testing.assert_close(s.conv1.to_dense()(x), dense.conv1(x))


# ---- from a run ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return swamp_ext.datasets.load("digits")


def test_a_runs_models_come_back_sparse_from_every_doorway(tmp_path, digits):
    cfg = swamp_ext.Config(model="lenet_300_100", rounds=3, epochs=2, prune_ratio=0.7, seed=4)
    res = swamp_ext.run_imp(cfg, digits, progress=False, checkpoint_dir=tmp_path / "run")
    x = digits.x_test[:50]
    with torch.inference_mode():
        ref = res.to_torch()(x)
        for net in (res.to_torch(sparse=True), res.to_torch(sparse="auto", batch_sizes=(1, 4))):
            torch.testing.assert_close(net(x), ref, rtol=1e-4, atol=1e-5)
        assert isinstance(res.to_torch(sparse=True).fc1, SparseLinear)
        loaded = swamp_ext.load_run(tmp_path / "run")
        for k in range(3):
            r = loaded.round(k)
            net = r.to_torch(sparse=True)
            torch.testing.assert_close(net(x), r.to_torch()(x), rtol=1e-4, atol=1e-5)
            fc1 = choices(net)[0]
            assert fc1.name == "fc1" and math.isclose(
                fc1.density, float(r.masks["fc1.weight"].float().mean()), abs_tol=1e-6)
        from swamp_ext.export import export

        ex = export(res, tmp_path / "model.csr", fmt="csr")
        net = from_csr(ex.path, sparse=True)
        torch.testing.assert_close(net(x), ref, rtol=1e-4, atol=1e-5)
        auto = from_csr(ex.path, batch_sizes=(2,))
        assert [c.name for c in choices(auto)] == ["fc1", "fc2", "fc3"]
        torch.testing.assert_close(auto(x), ref, rtol=1e-4, atol=1e-5)
        assert state_bytes(net) < 0.5 * state_bytes(res.to_torch())


def test_from_csr_explains_what_it_lacks(tmp_path, digits):
    from swamp_ext._core import _C

    cfg = swamp_ext.Config(model="lenet_300_100", rounds=2, epochs=2, seed=1)
    res = swamp_ext.run_imp(cfg, digits, progress=False)
    from swamp_ext.export import export

    p = export(res, tmp_path / "m.csr", fmt="csr").path
    tensors, meta = _C.io.load_safetensors(p)
    del meta["input_shape"]
    old = str(tmp_path / "old.csr")
    _C.io.save_safetensors(old, tensors, meta)
    with pytest.raises(ValueError, match="pass input_shape"):
        from_csr(old)
    net = from_csr(old, sparse=True, input_shape=digits.input_shape)
    assert isinstance(net.fc1, SparseLinear)
    with pytest.raises(ValueError, match="does not fit the module"):
        from_csr(p, sparse=True, module=nn.Linear(3, 3))


# ---- 2:4 on GPUs ---------------------------------------------------------------------------

def test_two_four_is_refused_by_name_where_its_kernels_cannot_run():
    m = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="compute capability 8.0 or later.*cpu"):
        sparsify(m, sparse="2:4", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees none"):
            sparsify(m, sparse="2:4")
    with pytest.raises(ValueError, match="device and dtype are for sparse='2:4'"):
        sparsify(m, sparse=True, device="cpu")
