"""The IMP / SWAMP engine end to end, on the built-in digits data (small and fast)."""

import math

import numpy as np
import pytest
import torch

import swamp_ext
from swamp_ext import Config, datasets, run_imp


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def small(**kw):
    base = dict(model="lenet_300_100", method="swamp", particles=3, rounds=4, epochs=4,
                rewind_epochs=1, batch_size=64, lr=0.05, seed=3, progress=None)
    base.pop("progress")
    base.update(kw)
    return Config(**base)


def run(cfg, data, **kw):
    return run_imp(cfg, data, progress=False, **kw)


def test_exact_sparsity_each_round_and_zeros_where_masked(digits):
    res = run(small(rounds=5), digits)
    assert [r.round for r in res.rounds] == list(range(5))
    total = res.rounds[0].prunable
    remaining = total
    for r in res.rounds:
        assert r.remaining == remaining
        assert r.sparsity == pytest.approx(1 - 0.8 ** r.round, abs=1e-5)
        assert r.sparsity == 1 - remaining / total
        remaining -= swamp_ext.ops.prune_count(0.2, remaining)
        assert 0.0 <= r.test_acc <= 1.0 and math.isfinite(r.test_nll) and r.seconds > 0
        assert len(r.particle_acc) == 3 and len(r.particle_nll) == 3
    state = res.state_dict()
    assert set(res.masks) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    kept = 0
    for name, m in res.masks.items():
        assert m.dtype == torch.bool and m.shape == state[name].shape
        assert torch.all(state[name][~m] == 0)
        kept += int(m.sum())
        assert res.rounds[-1].layer_density[name] == pytest.approx(float(m.float().mean()))
    assert kept == res.rounds[-1].remaining
    assert res.rounds[-1].test_acc > 0.8  # it learns


def test_masks_only_shrink_and_runs_are_deterministic(digits):
    a = run(small(rounds=3), digits)
    b = run(small(rounds=4), digits)
    c = run(small(rounds=3), digits)
    for name in a.masks:
        assert not (b.masks[name] & ~a.masks[name]).any(), "a pruned weight came back"
        assert torch.equal(a.masks[name], c.masks[name])
    for ra, rb, rc in zip(a.rounds, b.rounds, c.rounds):
        assert ra.test_acc == rb.test_acc == rc.test_acc
        assert ra.test_nll == rb.test_nll == rc.test_nll
        assert ra.particle_nll == rc.particle_nll
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k])
    d = run(small(rounds=3, seed=4), digits)
    assert any(not torch.equal(a.masks[n], d.masks[n]) for n in a.masks)


def test_swamp_with_one_particle_and_no_swa_equals_imp(digits):
    imp = run(small(method="imp", rounds=3), digits)
    sw = run(small(method="swamp", particles=1, use_swa=False, rounds=3), digits)
    for a, b in zip(imp.rounds, sw.rounds):
        assert (a.test_acc, a.test_nll, a.sparsity) == (b.test_acc, b.test_nll, b.sparsity)
    for k, v in imp.state_dict().items():
        assert torch.equal(v, sw.state_dict()[k]), k
    for k in imp.masks:
        assert torch.equal(imp.masks[k], sw.masks[k])


def test_methods_particles_per_round(digits):
    res = run(small(method="swamp_plus", particles=3, single_particle_rounds=2, rounds=4), digits)
    assert [r.particles for r in res.rounds] == [1, 1, 3, 3]
    res = run(small(method="imp_swa", particles=3, rounds=2), digits)
    assert [r.particles for r in res.rounds] == [1, 1]
    assert res.rounds[0].ensemble_acc == res.rounds[0].test_acc


def test_batchnorm_statistics_are_recomputed(digits):
    cfg = small(model="conv4", rounds=1, particles=2, epochs=3)
    res = run(cfg, digits)
    state = res.state_dict()
    # a cumulative pass over the training data, one per batch: not the EMA of training
    n_batches = digits.x_train.shape[0] // cfg.batch_size
    assert int(state["bn1.num_batches_tracked"]) == n_batches
    out = swamp_ext.models.forward("conv4", digits.input_shape, 10, state, digits.x_test)
    acc = float((out.argmax(1) == digits.y_test).double().mean())
    assert acc == pytest.approx(res.rounds[0].test_acc, abs=1e-9)
    # the statistics matter: put back the defaults and the accuracy changes
    broken = dict(state)
    for k in list(broken):
        if k.endswith("running_mean"):
            broken[k] = torch.zeros_like(broken[k])
        if k.endswith("running_var"):
            broken[k] = torch.ones_like(broken[k])
    out2 = swamp_ext.models.forward("conv4", digits.input_shape, 10, broken, digits.x_test)
    assert not torch.allclose(out, out2)
    # and they are the batch statistics of the averaged weights: recompute them in Python
    x = digits.x_train
    w = state["conv1.weight"]
    h = torch.nn.functional.conv2d(x, w, padding=1)
    means = [h[s:s + cfg.batch_size].mean(dim=(0, 2, 3)) for s in
             range(0, n_batches * cfg.batch_size, cfg.batch_size)]
    assert torch.allclose(state["bn1.running_mean"], torch.stack(means).mean(0), atol=1e-5)


def test_callbacks_and_schedule_switch_to_swa_lr(digits):
    seen, epochs = [], []
    cfg = small(method="imp_swa", rounds=2, epochs=8, swa_start=0.5, swa_lr=0.03, lr=0.1)
    run_imp(cfg, digits, on_round=seen.append, progress=epochs.append)
    assert [r.round for r in seen] == [0, 1]
    rounds = [p for p in epochs if p.round == 0]
    assert [p.epoch for p in rounds] == list(range(2, 9))  # from the rewind point to the end
    for p in rounds:
        if p.epoch > 4:
            assert p.lr == pytest.approx(0.03)
        else:
            assert p.lr > 0.03
    assert any(p.round == -1 for p in epochs)  # the ticket


def test_schedule_values():
    lr = swamp_ext._C.ops.learning_rate
    assert lr("cosine", 0.1, 100, 0, -1, 0.05, 0) == pytest.approx(0.1)
    assert lr("cosine", 0.1, 100, 0, -1, 0.05, 50) == pytest.approx(0.05)
    assert lr("cosine", 0.1, 100, 10, -1, 0.05, 4) == pytest.approx(0.05)  # warm-up
    assert lr("cosine", 0.1, 100, 0, 60, 0.02, 59) > 0.02
    assert lr("cosine", 0.1, 100, 0, 60, 0.02, 60) == 0.02
    assert lr("step", 0.1, 100, 0, -1, 0.05, 60) == pytest.approx(0.01)


def test_batch_orders_differ_by_particle_and_round():
    order = swamp_ext._C.ops.batch_order
    p0 = [order(1000, 0, 2, 0, e) for e in range(3)]
    p1 = [order(1000, 0, 2, 1, e) for e in range(3)]
    r3 = order(1000, 0, 3, 0, 0)
    assert all(sorted(p.tolist()) == list(range(1000)) for p in p0 + p1)
    assert torch.equal(order(1000, 0, 2, 0, 1), p0[1])  # reproducible
    # not the same order shifted by an epoch, not the same across particles or rounds
    for a in p0:
        for b in p1:
            assert (a == b).float().mean() < 0.02
    assert (r3 == p0[0]).float().mean() < 0.02


def test_masked_sgd_keeps_pruned_weights_grads_and_momentum_zero():
    torch.manual_seed(0)
    w = torch.randn(20, 10, requires_grad=True)
    ref = torch.nn.Parameter(w.detach().clone())
    mask = torch.rand(20, 10) > 0.5
    with torch.no_grad():
        w.mul_(mask)
        ref.mul_(mask)
    opt = swamp_ext._C.ops.MaskedSGD([w], [mask], momentum=0.9, nesterov=True, weight_decay=0.1)
    torch_opt = torch.optim.SGD([ref], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(20, 10)  # gradients are nonzero at pruned positions too
        opt.zero_grad()
        w.grad = g.clone()
        opt.step(0.05)
        torch_opt.zero_grad()
        ref.grad = g * mask  # what a masked forward would give
        torch_opt.step()
        with torch.no_grad():
            ref.mul_(mask)
        assert torch.all(w[~mask] == 0)
        assert torch.all(opt.momentum_buffers()[0][~mask] == 0)
    # on the unpruned entries it is plain SGD
    assert torch.allclose(w[mask], ref[mask], atol=1e-6)


def test_masked_sgd_steps_a_range_of_parameters():
    # the threads path steps each particle's parameters in its own lane
    torch.manual_seed(0)
    ws = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    full = [w.detach().clone().requires_grad_(True) for w in ws]
    opt = swamp_ext._C.ops.MaskedSGD(ws, [], momentum=0.9)
    ref = swamp_ext._C.ops.MaskedSGD(full, [], momentum=0.9)
    before = [w.detach().clone() for w in ws]
    for w, f in zip(ws, full):
        w.grad = torch.ones(4, 3)
        f.grad = torch.ones(4, 3)
    opt.step(0.1, 1, 3)
    assert torch.equal(ws[0], before[0]) and ws[0].grad is not None  # outside the range
    ref.step(0.1)
    assert torch.equal(ws[1], full[1]) and torch.equal(ws[2], full[2])
    opt.zero_grad(0, 1)
    assert ws[0].grad is None and ws[1].grad is not None
    opt.step(0.1, 0, 1)  # no gradient: skipped
    assert torch.equal(ws[0], before[0])
    with pytest.raises(ValueError, match=r"range \[2, 4\) outside the 3 parameters"):
        opt.step(0.1, 2, 4)
    with pytest.raises(ValueError, match="outside"):
        opt.zero_grad(2, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_masked_sgd_matches_torch_sgd(dtype, momentum, nesterov, weight_decay, masked, layout):
    # contiguous CPU parameters take the fused one-pass kernel, strided ones the foreach path
    torch.manual_seed(0)
    w0 = torch.randn(30, 20, dtype=dtype)
    w = (w0.clone() if layout == "contiguous" else w0.t().contiguous().t()).requires_grad_(True)
    assert w.is_contiguous() == (layout == "contiguous")
    ref = torch.nn.Parameter(w0.clone())
    mask = torch.rand(30, 20) > 0.5
    with torch.no_grad():
        if masked:
            w.mul_(mask)
            ref.mul_(mask)
    opt = swamp_ext._C.ops.MaskedSGD([w], [mask] if masked else [], momentum=momentum,
                                     nesterov=nesterov, weight_decay=weight_decay)
    torch_opt = torch.optim.SGD([ref], lr=0.05, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay)
    for _ in range(6):
        g = torch.randn(30, 20, dtype=dtype)
        opt.zero_grad()
        assert w.grad is None  # released, not zeroed
        w.grad = g.clone()
        opt.step(0.05)
        torch_opt.zero_grad()
        ref.grad = g * mask if masked else g.clone()
        torch_opt.step()
        if masked:
            with torch.no_grad():
                ref.mul_(mask)
            assert torch.all(w[~mask] == 0)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(w.detach(), ref.detach(), rtol=0, atol=tol)
    if momentum:
        buf = opt.momentum_buffers()[0]
        assert buf.dtype == dtype
        if masked:
            assert torch.all(buf[~mask] == 0)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(model="resnet1000"), "model"),
        (dict(method="sgd"), "method"),
        (dict(particles=0), "particles"),
        (dict(prune_ratio=0.0), "prune_ratio"),
        (dict(prune_ratio=1.0), "prune_ratio"),
        (dict(epochs=0), "epochs"),
        (dict(rewind_epochs=10, epochs=10), "rewind_epochs"),
        (dict(swa_start=1.0), "swa_start"),
        (dict(swa_start=0.0), "swa_start"),
        (dict(swa_lr=-1.0), "swa_lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(batch_size=0), "batch_size"),
        (dict(schedule="linear"), "schedule"),
        (dict(device="tpu"), "device"),
        (dict(rounds=0), "rounds"),
        (dict(weight_decay=-1e-4), "weight_decay"),
    ],
)
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"Config.{field}"):
        Config(**kw)


def test_bad_config_types():
    with pytest.raises(TypeError, match="Config.particles"):
        Config(particles=2.5)
    with pytest.raises(TypeError, match="Config.model"):
        Config(model=3)


def test_python_config_mirrors_the_cpp_field_list():
    # one field list (SWAMP_CONFIG_FIELDS): the dataclass has the same fields, order, defaults
    c = swamp_ext._C
    assert c.config_fields(Config().to_cpp()) == c.config_fields(c.Config())
    assert Config.fields() == [name for name, _ in c.config_fields(c.Config())]


def test_cpp_validation_guards_the_cpp_api():
    c = swamp_ext._C.Config()
    c.particles = 0
    with pytest.raises(ValueError, match="particles"):
        swamp_ext._C.validate_config(c)


def _arrays(n=200, classes=4, shape=(1, 6, 6)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda a: a.__setitem__(0, a[0] * float("nan")), ValueError, "x_train.*NaN"),
        (lambda a: a.__setitem__(1, a[1] + 10), ValueError, "labels must be in"),
        (lambda a: a.__setitem__(1, a[1][:-1]), ValueError, "x_train has 200 samples but y_train"),
        (lambda a: a.__setitem__(2, torch.randn(50, 1, 5, 5)), ValueError, "x_test samples"),
        (lambda a: a.__setitem__(0, a[0][:0]), ValueError, "x_train is empty"),
        (lambda a: a.__setitem__(1, a[1].float() + 0.5), ValueError, "integer class labels"),
        (lambda a: a.__setitem__(0, "pixels"), TypeError, "x_train must be"),
    ],
)
def test_bad_data(mutate, exc, pattern):
    x, y = _arrays()
    arrays = [x, y, x[:50].clone(), y[:50].clone()]
    mutate(arrays)
    with pytest.raises(exc, match=pattern):
        datasets.from_arrays(*arrays, num_classes=4)


def test_user_arrays_run_and_tiny_datasets_are_rejected():
    x, y = _arrays()
    data = datasets.from_arrays(x.numpy(), y.numpy(), x[:50], y[:50], num_classes=4)
    assert data.x_train.dtype == torch.float32 and isinstance(data.x_train, torch.Tensor)
    res = run(small(model="conv4", rounds=2, particles=2, epochs=2, batch_size=32), data)
    assert res.rounds[1].sparsity == pytest.approx(0.2, abs=1e-5)
    with pytest.raises(ValueError, match="fewer than one batch"):
        run(small(batch_size=500, rounds=1), data)
    with pytest.raises(ValueError, match="conv4 needs image inputs"):
        flat = datasets.from_arrays(np.zeros((100, 12), np.float32), np.arange(100) % 3,
                                    np.zeros((10, 12), np.float32), np.arange(10) % 3)
        run(small(model="conv4", rounds=1, batch_size=10), flat)


def test_unknown_dataset_and_wrong_argument_types(digits):
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
        datasets.load("cifar1000")
    with pytest.raises(TypeError, match="swamp_ext.Config"):
        run_imp({"model": "lenet_300_100"}, digits)
    with pytest.raises(TypeError, match="Dataset"):
        run_imp(small(), (digits.x_train, digits.y_train))


def test_callback_exception_propagates(digits):
    def boom(r):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        run(small(rounds=3), digits, on_round=boom)


def test_divergence_is_reported_with_round_particle_and_step(digits):
    with pytest.raises(RuntimeError, match=r"diverged.*round .*particle .*step"):
        run(small(lr=1e6, momentum=0.0, rounds=1, method="imp"), digits)


def test_mnist5k_is_built_in():
    d = datasets.load("mnist5k")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert sorted(torch.bincount(torch.cat([d.y_train, d.y_test])).tolist()) == [500] * 10
    # shuffled before splitting: every class in the test split
    assert len(torch.unique(d.y_test)) == 10
    assert abs(float(d.x_train.mean())) < 1e-3


def test_deterministic_switch_is_scoped_to_the_run(digits):
    assert not torch.are_deterministic_algorithms_enabled()
    a = run(small(rounds=2, deterministic=True), digits)
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards
    b = run(small(rounds=2), digits)
    assert [r.test_nll for r in a.rounds] == [r.test_nll for r in b.rounds]


def test_grouped_loss_reads_give_the_same_run_and_name_the_diverging_step(digits):
    # the GPU logic (losses read in groups, not every step) run on the CPU
    a = run(small(rounds=2), digits)
    b = run(small(rounds=2), digits, loss_sync_every=5)
    assert [(r.test_nll, r.train_loss) for r in a.rounds] == [(r.test_nll, r.train_loss)
                                                              for r in b.rounds]
    for every in (0, 5):
        with pytest.raises(RuntimeError,
                           match=r"diverged.*round -1 \(ticket\), particle 0, step 2;"):
            run(small(lr=1e6, momentum=0.0, rounds=1, method="imp"), digits,
                loss_sync_every=every)
    with pytest.raises(ValueError, match="loss_sync_every"):
        run(small(rounds=1), digits, loss_sync_every=-1)


def test_keep_first_last_dense(digits):
    res = run(small(rounds=3, keep_first_last_dense=True), digits)
    assert set(res.masks) == {"fc2.weight"}  # lenet_300_100: fc1 and fc3 stay dense
    last = res.rounds[-1]
    assert last.sparsity == pytest.approx(0.36, abs=1e-4)
    assert last.layer_density["fc1.weight"] == 1.0 and last.layer_density["fc3.weight"] == 1.0
    assert last.sparsity_all < last.sparsity
    state = res.state_dict()
    assert torch.count_nonzero(state["fc1.weight"]) == state["fc1.weight"].numel()


def test_rewind_steps_set_the_ticket(digits):
    tickets = {}

    def ticket_of(**kw):
        run(small(rounds=1, method="imp", **kw), digits,
            on_ticket=lambda t: tickets.__setitem__(repr(kw), t))
        return tickets[repr(kw)]

    spe = digits.x_train.shape[0] // 64
    # rewind_steps counts steps: a whole epoch of them is rewind_epochs=1
    a, b = ticket_of(rewind_steps=spe), ticket_of(rewind_epochs=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = ticket_of(rewind_steps=5)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])
    with pytest.raises(ValueError, match="rewind_steps"):
        run(small(rounds=1, rewind_steps=10_000), digits)
