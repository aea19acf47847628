"""The paper's analyses in the core (linear paths and barriers, the Hessian trace, ensembles of
runs) checked against independent computations in plain PyTorch; the pruning controls
(layer-wise magnitude, random with the same layer densities); plots, export and TensorBoard."""

from __future__ import annotations

import io
import math
import os
from types import SimpleNamespace

import pytest
import torch

import swamp_ext
from swamp_ext import analysis, models
from swamp_ext.__main__ import main


@pytest.fixture(scope="module")
def digits():
    return swamp_ext.datasets.load("digits")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """imp (seeds 0, 1) and swamp-2 with kept particles, lenet_300_100, 3 rounds, halving."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, method, seed in (("imp0", "imp", 0), ("imp1", "imp", 1), ("swamp", "swamp", 0)):
        cfg = swamp_ext.Config(model="lenet_300_100", method=method, particles=2, rounds=3,
                               epochs=3, prune_ratio=0.5, seed=seed)
        swamp_ext.run_imp(cfg, digits, progress=False, checkpoint_dir=root / name,
                          keep_particles=True)
        out[name] = root / name
    return out


def torch_figures(net, x, y):
    with torch.no_grad():
        lp = torch.log_softmax(net(x).double(), 1)
    return (torch.nn.functional.nll_loss(lp, y).item(),
            (lp.argmax(1) == y).double().mean().item())


def mix(a, b, alpha):
    return {k: (a[k].double() * (1 - alpha) + b[k].double() * alpha).to(a[k].dtype)
            if a[k].is_floating_point() else a[k] for k in a}


# ---- linear paths -----------------------------------------------------------------------------
def test_linear_path_matches_plain_torch_and_its_barrier_is_the_excess_over_the_line(
        runs, digits):
    res = swamp_ext.load_run(runs["swamp"])
    r = res.round(1)
    a, b = r.particles
    p = analysis.linear_path(res, digits, a, b, points=5)
    assert p.alpha == [0.0, 0.25, 0.5, 0.75, 1.0]
    for i, alpha in enumerate(p.alpha):
        net = models.to_torch("lenet_300_100", mix(a, b, alpha), digits.input_shape, 10)
        test = torch_figures(net, digits.x_test, digits.y_test)
        train = torch_figures(net, digits.x_train, digits.y_train)
        assert p.test_loss[i] == pytest.approx(test[0], rel=1e-5)
        assert p.test_acc[i] == pytest.approx(test[1], abs=1.5 / len(digits.y_test))
        assert p.train_loss[i] == pytest.approx(train[0], rel=1e-5)
        assert p.train_acc[i] == pytest.approx(train[1], abs=1.5 / len(digits.y_train))
    # the particles' own accuracies at the ends, as the run recorded them
    assert p.test_acc[0] == pytest.approx(r.record.particle_acc[0], abs=1e-12)
    assert p.test_acc[-1] == pytest.approx(r.record.particle_acc[1], abs=1e-12)
    for values, got in ((p.test_loss, p.test_loss_barrier), (p.train_loss, p.train_loss_barrier),
                        ([1 - v for v in p.test_acc], p.test_error_barrier)):
        excess = [v - ((1 - t) * values[0] + t * values[-1]) for t, v in zip(p.alpha, values)]
        assert got == pytest.approx(max(excess), abs=1e-12) and got >= 0


def test_a_path_through_a_worse_model_has_a_barrier(runs, digits):
    res = swamp_ext.load_run(runs["imp0"])
    a = res.round(1).state
    # b: a with its first hidden layer's units permuted (fc1 rows, fc2 columns): the same
    # function, but the points between the two are not (permutation symmetry)
    b = dict(a)
    perm = torch.randperm(a["fc1.weight"].shape[0], generator=torch.Generator().manual_seed(0))
    b["fc1.weight"], b["fc1.bias"] = a["fc1.weight"][perm], a["fc1.bias"][perm]
    b["fc2.weight"] = a["fc2.weight"][:, perm]
    p = analysis.linear_path(res, digits, a, a, points=3, train=False)
    assert p.test_loss_barrier == pytest.approx(0.0, abs=1e-9)  # a point: no barrier
    assert all(math.isnan(v) for v in p.train_loss) and math.isnan(p.train_loss_barrier)
    q = analysis.linear_path(res, digits, a, b, points=3, train=False)
    assert q.test_loss[0] == pytest.approx(q.test_loss[2], rel=1e-5)
    assert q.test_loss_barrier == pytest.approx(
        q.test_loss[1] - (q.test_loss[0] + q.test_loss[2]) / 2, rel=1e-9)
    assert q.test_loss_barrier > 0.05


def test_batchnorm_recomputed_along_the_path_matches_torch(tmp_path, digits):
    cfg = swamp_ext.Config(model="conv4_small", method="swamp", particles=2, rounds=1, epochs=2,
                           bn_batch_size=100)
    res = swamp_ext.run_imp(cfg, digits, progress=False, keep_particles=True)
    a, b = res.round(0).particles
    raw, bn = analysis.barrier(res, digits, 0, points=3, train_samples=500)
    assert "raw" in raw.label and "BN recomputed" in bn.label
    net = models.to_torch("conv4_small", mix(a, b, 0.5), digits.input_shape, 10)
    assert raw.test_loss[1] == pytest.approx(torch_figures(net, digits.x_test,
                                                           digits.y_test)[0], rel=1e-4)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for s in range(0, digits.x_train.shape[0] - 100 + 1, 100):
            net(digits.x_train[s:s + 100])
    net.eval()
    assert bn.test_loss[1] == pytest.approx(torch_figures(net, digits.x_test,
                                                          digits.y_test)[0], rel=1e-4)
    assert bn.test_loss[1] != pytest.approx(raw.test_loss[1], rel=1e-3)
    # train figures over the first 500 samples only
    assert bn.train_loss[1] == pytest.approx(
        torch_figures(net, digits.x_train[:500], digits.y_train[:500])[0], rel=1e-4)


def test_linear_path_refuses_what_does_not_fit(runs, digits):
    res = swamp_ext.load_run(runs["imp0"])
    a = res.round(0).state
    with pytest.raises(ValueError, match="lacks 'fc2.weight'"):
        analysis.linear_path(res, digits, a, {k: v for k, v in a.items() if k != "fc2.weight"})
    with pytest.raises(ValueError, match="has shape"):
        analysis.linear_path(res, digits, a, {**a, "fc1.bias": a["fc1.bias"][:3]})
    with pytest.raises(ValueError, match="'fc1.bias' holds NaN or infinite values"):
        analysis.linear_path(res, digits, a, {**a, "fc1.bias": a["fc1.bias"] * float("nan")})
    with pytest.raises(ValueError, match="points must be >= 2"):
        analysis.linear_path(res, digits, a, a, points=1)
    with pytest.raises(ValueError, match="it trained one particle"):
        analysis.barrier(res, digits, 0)
    with pytest.raises(ValueError, match="no successor"):
        analysis.barrier(res, digits, 2, between="rounds")
    mnist = SimpleNamespace()  # not a dataset
    with pytest.raises(TypeError, match="data must be"):
        analysis.linear_path(res, mnist, a, a)


def test_particles_not_kept_are_named(tmp_path, digits):
    cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=1, epochs=2)
    swamp_ext.run_imp(cfg, digits, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="keep_particles=True"):
        analysis.barrier(swamp_ext.load_run(tmp_path), digits, 0)


# ---- Hessian trace ----------------------------------------------------------------------------
class Softmax(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_hessian_trace_matches_the_closed_form_of_softmax_regression(digits):
    # for softmax regression H = mean_i (diag(p_i) - p_i p_i^T) (x) [x_i; 1][x_i; 1]^T, so the
    # trace over the unpruned weights and the biases is
    # mean_i sum_c p_ic (1 - p_ic) (sum_j mask_cj x_ij^2 + 1)
    cfg = swamp_ext.Config(method="imp", rounds=2, epochs=2, prune_ratio=0.5)
    res = swamp_ext.run_imp(cfg, digits, model=Softmax(), progress=False)
    r = res.round(1)
    n = 600
    t = analysis.hessian_trace(res, digits, 1, train_samples=n, tolerance=0.03,
                               max_samples=400)
    net = res.round(1).to_torch()
    x = digits.x_train[:n].flatten(1).double()
    with torch.no_grad():
        p = torch.softmax(net(digits.x_train[:n]).double(), 1)
    (wname,) = r.masks
    mask = r.masks[wname].double()
    exact = ((p * (1 - p)) * ((x ** 2) @ mask.T + 1)).sum(1).mean().item()
    assert t.converged and t.samples >= 10
    assert t.dimension == int(mask.sum().item()) + 10
    assert abs(t.trace - exact) <= 4 * t.std_error + 1e-9, (t, exact)
    assert t.std_error <= 0.03 * abs(t.trace)
    # pruned weights are outside: the dense trace is larger
    dense = ((p * (1 - p)) * ((x ** 2).sum(1, keepdim=True) + 1)).sum(1).mean().item()
    assert dense > exact * 1.2
    # reproducible from its seed
    again = analysis.hessian_trace(res, digits, 1, train_samples=n, tolerance=0.03,
                                   max_samples=400)
    assert again == t


def test_hessian_trace_of_a_zoo_model_is_positive_and_named_errors(runs, digits):
    res = swamp_ext.load_run(runs["imp0"])
    t = analysis.hessian_trace(res, digits, 2, train_samples=300, max_samples=20)
    assert t.trace > 0 and t.samples <= 20 and t.dimension == res.rounds[2].remaining + 410
    with pytest.raises(ValueError, match="min_samples"):
        analysis.hessian_trace(res, digits, 2, min_samples=1)
    with pytest.raises(ValueError, match="give round= or state="):
        analysis.hessian_trace(res, digits)


# ---- ensembles of runs ------------------------------------------------------------------------
def test_imp_ensemble_is_the_mean_of_the_runs_probabilities(runs, digits, tmp_path):
    a, b = swamp_ext.load_run(runs["imp0"]), swamp_ext.load_run(runs["imp1"])
    ens = analysis.imp_ensemble([a, b], digits, tmp_path / "ens")
    assert ens.label == "imp_ensemble(2)"
    for k, rec in enumerate(ens.rounds):
        probs = []
        for run in (a, b):
            with torch.no_grad():
                probs.append(torch.softmax(run.round(k).to_torch()(digits.x_test).double(), 1))
        mean = (probs[0] + probs[1]) / 2
        assert rec.test_acc == pytest.approx(
            (mean.argmax(1) == digits.y_test).double().mean().item(), abs=1e-12)
        assert rec.test_nll == pytest.approx(
            torch.nn.functional.nll_loss(mean.log(), digits.y_test).item(), rel=1e-6)
        assert rec.particle_acc == [a.rounds[k].test_acc, b.rounds[k].test_acc]
        assert rec.sparsity == a.rounds[k].sparsity
    loaded = swamp_ext.load_run(tmp_path / "ens")
    assert loaded.ensemble_of == ens.ensemble_of and loaded.label == "imp_ensemble(2)"
    assert [r.test_acc for r in loaded.rounds] == [r.test_acc for r in ens.rounds]
    with pytest.raises(FileNotFoundError, match="not kept"):
        loaded.round(0)
    table = swamp_ext.report.compare([a, b, loaded], at=[0.5])
    assert "imp_ensemble(2)" in table and "imp " in table
    with pytest.raises(ValueError, match="differ in the seed only"):
        analysis.imp_ensemble([a, swamp_ext.load_run(runs["swamp"])], digits)
    with pytest.raises(ValueError, match="share a seed"):
        analysis.imp_ensemble([a, a], digits)


# ---- pruning controls -------------------------------------------------------------------------
def kept_counts(res, k):
    return {n: int(m.sum()) for n, m in res.round(k).masks.items()}


def test_layerwise_pruning_takes_the_ratio_from_every_layer(digits):
    cfg = swamp_ext.Config(method="imp", rounds=3, epochs=2, prune_ratio=0.3,
                           pruning="layerwise")
    res = swamp_ext.run_imp(cfg, digits, progress=False)
    want = {n: m.numel() for n, m in res.round(0).masks.items()}
    for k in range(3):
        assert kept_counts(res, k) == want
        want = {n: c - math.floor(0.3 * c + 0.5) for n, c in want.items()}
    # the kept weights of a layer are its largest of the previous round's model
    prev, now = res.round(1).state, res.round(2).masks
    for n, m in now.items():
        w = prev[n].abs()
        assert w[m].min() >= w[res.round(1).masks[n] & ~m].max()


def test_random_pruning_keeps_the_layer_densities_of_magnitude_pruning(digits):
    cfg = swamp_ext.Config(method="imp", rounds=3, epochs=2, prune_ratio=0.5, pruning="random",
                           seed=3)
    res = swamp_ext.run_imp(cfg, digits, progress=False)
    for k in (1, 2):
        prev = res.round(k - 1)
        names = list(prev.masks)
        # independently: what global magnitude pruning would keep per layer of that model
        by_mag = swamp_ext.ops.global_magnitude_prune(
            [prev.state[n] for n in names], [prev.masks[n] for n in names], 0.5)
        now = res.round(k).masks
        for n, m in zip(names, by_mag):
            assert int(now[n].sum()) == int(m.sum()), n
            assert not (now[n] & ~prev.masks[n]).any()  # pruned stays pruned
        # positions: about what independent random subsets of the previous mask share
        # (IoU q / (2 - q) for a fraction q kept of it), not the magnitude choice (IoU 1)
        overlap = analysis.mask_overlap(now, dict(zip(names, by_mag)))
        for n in ("fc1.weight", "fc2.weight"):
            q = int(now[n].sum()) / int(prev.masks[n].sum())
            assert overlap[n].iou == pytest.approx(q / (2 - q), abs=0.05), n
    assert res.label == "imp, random pruning"
    again = swamp_ext.run_imp(cfg, digits, progress=False)
    for n, m in res.masks.items():
        assert torch.equal(again.masks[n], m)  # the positions come from the seed
    with pytest.raises(ValueError,
                       match="Config.pruning must be global, layerwise, random or an N:M"):
        swamp_ext.Config(pruning="magnitude")


# ---- what people look at ----------------------------------------------------------------------
def test_cli_analyses_plots_and_exports(runs, tmp_path, capsys):
    swamp_dir, imp0, imp1 = str(runs["swamp"]), str(runs["imp0"]), str(runs["imp1"])
    assert main(["analyze", "barrier", swamp_dir, "--round", "1", "--points", "3"]) == 0
    out = capsys.readouterr().out
    assert "particle 0 - particle 1 (no batch norm)" in out and "loss barrier" in out
    assert os.path.isfile(os.path.join(swamp_dir, "analysis", "barrier_round1_particles.json"))
    assert main(["analyze", "barrier", imp0, "--round", "0", "--between", "rounds",
                 "--points", "3", "--bn", "raw"]) == 0
    assert main(["analyze", "hessian", imp0, "--round", "1", "--train-samples", "200",
                 "--max-samples", "20"]) == 0
    assert "Hessian trace at round 1" in capsys.readouterr().out
    assert main(["show", imp0]) == 0
    shown = capsys.readouterr().out
    assert "saved analyses:" in shown and "Hessian trace at round 1:" in shown
    assert "barrier, round 0 - round 1 (no batch norm): test loss" in shown
    ens = str(tmp_path / "ens")
    assert main(["analyze", "ensemble", imp0, imp1, "--out", ens]) == 0
    assert main(["compare", imp0, imp1, swamp_dir, ens, "--at", "50", "75"]) == 0
    table = capsys.readouterr().out
    assert "imp_ensemble(2)" in table and "swamp-2" in table
    for kind in ("accuracy", "layers", "barrier"):
        png = tmp_path / f"{kind}.png"
        assert main(["plot", imp0, imp1, swamp_dir, ens, "-o", str(png), "--kind", kind]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["plot", imp1, "-o", str(tmp_path / "x.png"), "--kind", "barrier"]) == 2
    assert "analyze barrier" in capsys.readouterr().err
    assert main(["analyze", "barrier", imp0]) == 2  # imp: one particle
    assert "one particle" in capsys.readouterr().err


def test_export_formats_round_trip(runs, tmp_path, capsys):
    from swamp_ext import export

    res = swamp_ext.load_run(runs["swamp"])
    r = res.round(2)
    e = export.export(res, tmp_path / "m.csr", "csr")
    back = export.load_csr(e.path)
    assert back.keys() == r.state.keys()
    for k, v in r.state.items():
        assert torch.equal(back[k], v), k
    # values and int32 column indices of the kept weights, int32 row pointers, the rest dense,
    # plus the file's header
    want = sum(8 * int(m.sum()) + 4 * (m.shape[0] + 1) for m in r.masks.values()) + sum(
        4 * v.numel() for k, v in r.state.items() if k not in r.masks)
    assert want <= e.bytes <= want + 4096 and e.bytes < 0.55 * e.dense_bytes
    ref = r.to_torch().state_dict()
    e = export.export(res, tmp_path / "m.safetensors", "safetensors", round=2)
    loaded, _ = swamp_ext._C.io.load_safetensors(e.path)
    e2 = export.export(res, tmp_path / "m.pt", "torch", round=2)
    pt = torch.load(e2.path, weights_only=True)
    for k, v in ref.items():
        assert torch.equal(loaded[k], v) and torch.equal(pt[k], v)
    tensors, meta = swamp_ext._C.io.load_safetensors(str(tmp_path / "m.csr"))
    damaged = dict(tensors)
    damaged["fc1.weight.col_indices"] = damaged["fc1.weight.col_indices"] + 10_000
    swamp_ext._C.io.save_safetensors(str(tmp_path / "bad.csr"), damaged, dict(meta))
    with pytest.raises(ValueError, match="do not describe"):
        export.load_csr(tmp_path / "bad.csr")
    with pytest.raises(ValueError, match="format must be one of"):
        export.export(res, tmp_path / "x", "pickle")
    assert main(["export", str(runs["swamp"]), "-o", str(tmp_path / "c.csr"), "--format",
                 "csr"]) == 0
    assert "bytes" in capsys.readouterr().out


def test_onnx_export_when_the_exporter_is_installed(runs, tmp_path):
    onnx = pytest.importorskip("onnx")
    from swamp_ext import export

    e = export.export(swamp_ext.load_run(runs["imp0"]), tmp_path / "m.onnx", "onnx")
    onnx.checker.check_model(onnx.load(e.path))


def test_tensorboard_scalars_read_back(tmp_path, digits):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = swamp_ext.Config(method="imp", rounds=2, epochs=2)
    with swamp_ext.callbacks.TensorBoard(tmp_path / "tb") as board:
        res = swamp_ext.run_imp(cfg, digits, progress=False, on_round=board)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("round/test_acc")]
    assert [s for s, _ in got] == [0, 1]
    for (_, v), r in zip(got, res.rounds):
        assert v == pytest.approx(r.test_acc, rel=1e-6)
    assert [e.value for e in acc.Scalars("round/sparsity")][1] == pytest.approx(
        res.rounds[1].sparsity, rel=1e-6)
    assert "layer_density/fc1.weight" in acc.Tags()["scalars"]


def test_progress_line_shows_the_last_accuracy_and_an_eta():
    from swamp_ext.progress import TerminalProgress

    out = io.StringIO()
    cfg = swamp_ext.Config(method="swamp", particles=2, rounds=3, epochs=4)
    bar = TerminalProgress(swamp_ext._C.particles_per_round(cfg.to_cpp()), out)
    P = SimpleNamespace
    bar(P(round=-1, particle=-1, particles=1, epoch=1, epochs=1, loss=2.0, lr=0.1))
    assert "ticket" in out.getvalue() and "ETA" not in out.getvalue()
    for e in (2, 3, 4):
        bar(P(round=0, particle=0, particles=2, epoch=e, epochs=4, loss=1.0, lr=0.1))
    bar.round_done(SimpleNamespace(test_acc=0.9123))
    bar(P(round=1, particle=0, particles=2, epoch=2, epochs=4, loss=1.0, lr=0.1))
    last = out.getvalue().split("\r")[-1]
    assert "round 1 particle 1/2" in last and "last acc 91.23%" in last and "ETA" in last


def test_compare_tabulates_calibration_and_sums_up_against_imp(runs):
    from swamp_ext import report

    imps = [swamp_ext.load_run(runs["imp0"]), swamp_ext.load_run(runs["imp1"])]
    sw = swamp_ext.load_run(runs["swamp"])
    at = [0.5, 0.75]
    text = report.compare(imps + [sw], at=at, metric="ece")
    assert text.startswith("calibration error ECE")
    # by hand: swamp's ECE minus the IMP seeds' mean, lower is better
    diffs = [sw.rounds[k].test_ece - (imps[0].rounds[k].test_ece + imps[1].rounds[k].test_ece) / 2
             for k in (1, 2)]
    better = sum(d < 0 for d in diffs)
    assert (f"swamp-2 vs imp: better at {better} of 2 sparsities, mean "
            f"{100 * sum(diffs) / 2:+.2f}; at 75%: {100 * diffs[1]:+.2f}") in text
    with pytest.raises(ValueError, match="metric must be one of"):
        report.compare(imps, at=at, metric="f1")


def test_analyses_of_a_module_run_on_a_torch_dataset(tmp_path, digits):
    from torch.utils.data import TensorDataset

    data = swamp_ext.datasets.from_torch(TensorDataset(digits.x_train, digits.y_train),
                                         TensorDataset(digits.x_test, digits.y_test),
                                         num_classes=10, name="digits as a torch Dataset")
    cfg = swamp_ext.Config(method="imp", rounds=2, epochs=2)
    swamp_ext.run_imp(cfg, data, model=Softmax(), checkpoint_dir=tmp_path, progress=False)
    bare = swamp_ext.load_run(tmp_path)
    with pytest.raises(ValueError, match=r"load_run\(DIR, model=module\)"):
        analysis.hessian_trace(bare, data, 1)
    res = swamp_ext.load_run(tmp_path, model=Softmax())
    a, b = res.round(0).state, res.round(1).state
    p = analysis.linear_path(res, data, a, b, points=3)
    same = analysis.linear_path(res, digits, a, b, points=3)  # the tensors themselves
    for got, want in ((p.test_loss, same.test_loss), (p.train_loss, same.train_loss)):
        assert got == pytest.approx(want, rel=1e-6)
    assert p.test_acc[-1] == pytest.approx(res.rounds[1].test_acc, abs=1e-12)
    with pytest.raises(ValueError, match="classes"):
        analysis.linear_path(res, swamp_ext.datasets.from_arrays(
            digits.x_train, digits.y_train % 5, digits.x_test, digits.y_test % 5,
            name="five"), a, b)


def test_checkpoints_written_before_the_pruning_field_resume(tmp_path, digits):
    import dataclasses

    from swamp_ext.testing import read_checkpoint, write_checkpoint

    cfg = swamp_ext.Config(method="imp", rounds=2, epochs=2)
    swamp_ext.run_imp(cfg, digits, checkpoint_dir=tmp_path, progress=False)
    path = str(tmp_path / "checkpoint.swamp")
    m = read_checkpoint(path)
    text = bytes(m["meta/config"].tolist()).decode()
    assert "pruning=global\n" in text
    old = text.replace("pruning=global\n", "")  # as an earlier swamp_ext wrote it
    m["meta/config"] = torch.tensor(list(old.encode()), dtype=m["meta/config"].dtype)
    write_checkpoint(path, m)
    with pytest.raises(ValueError, match="pruning: checkpoint <missing>, now random"):
        swamp_ext.run_imp(dataclasses.replace(cfg, rounds=3, pruning="random"), digits,
                          checkpoint_dir=tmp_path, progress=False)
    res = swamp_ext.run_imp(dataclasses.replace(cfg, rounds=3), digits, checkpoint_dir=tmp_path,
                            progress=False)
    assert [r.round for r in res.rounds] == [0, 1, 2]
