"""Runs keep every round: masks bit-packed and the averaged model (and optionally the particles)
per round, in the run folder or in the Result; load_run gives them back."""

from __future__ import annotations

import os

import pytest
import torch

import swamp_ext
from swamp_ext.run_folder.rounds import pack_bits, unpack_bits


@pytest.fixture(scope="module")
def digits():
    return swamp_ext.datasets.load("digits")


def accuracy(net, data) -> float:
    with torch.no_grad():
        return (net(data.x_test).argmax(1) == data.y_test).double().mean().item()


def test_every_round_is_kept_and_loads_back(tmp_path, digits):
    cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=3, epochs=2, seed=2)
    seen = []
    res = swamp_ext.run_imp(cfg, digits, progress=False, checkpoint_dir=tmp_path,
                            keep_particles=True, on_models=seen.append)
    names = sorted(os.listdir(tmp_path / "rounds"))
    assert names == ["round_000.safetensors", "round_001.safetensors", "round_002.safetensors"]
    loaded = swamp_ext.load_run(tmp_path)
    assert [r.test_acc for r in loaded.rounds] == [r.test_acc for r in res.rounds]
    assert loaded.config == cfg and loaded.input_shape == digits.input_shape
    for rm in seen:
        for source in (res, loaded):
            k = source.round(rm.round)
            assert k.record.round == rm.round and k.sparsity == res.rounds[rm.round].sparsity
            assert k.masks.keys() == rm.masks.keys()
            for name, m in rm.masks.items():
                assert k.masks[name].dtype == torch.bool and torch.equal(k.masks[name], m)
            for name, v in rm.average.items():
                assert torch.equal(k.state[name], v), name
            assert len(k.particles) == 2
            for p in range(2):
                for name, v in rm.particles[p].items():
                    assert torch.equal(k.particles[p][name], v)
            # the kept model is the round's model: its accuracy is the recorded one
            assert accuracy(k.to_torch(), digits) == pytest.approx(k.record.test_acc, abs=1e-9)
    # masks of later rounds are subsets, sparsity grows: rounds are not copies of each other
    r0, r2 = loaded.round(0), loaded.round(2)
    for name in r0.masks:
        assert not (r2.masks[name] & ~r0.masks[name]).any()
    assert r2.sparsity > r0.sparsity
    for name, m in res.masks.items():
        assert torch.equal(loaded.masks[name], m)
    assert accuracy(loaded.to_torch(), digits) == pytest.approx(res.rounds[-1].test_acc, abs=1e-9)
    # compact: a mask takes a bit a weight
    packed = sum(m.numel() for m in res.masks.values()) / 8
    size = os.path.getsize(tmp_path / "rounds" / "round_002.safetensors")
    state = sum(v.numel() * v.element_size() for v in res.state_dict().values())
    assert size < 3 * state + packed + 20000  # the model and 2 particles, masks packed
    with pytest.raises(IndexError, match="round 7 is not in this run"):
        loaded.round(7)


def test_rounds_in_memory_without_a_folder_and_not_kept(digits):
    cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=2, epochs=2)
    res = swamp_ext.run_imp(cfg, digits, progress=False)
    r1 = res.round(1)
    assert r1.particles == []  # not asked for
    for name, m in res.masks.items():
        assert torch.equal(r1.masks[name], m)
    assert accuracy(r1.to_torch(), digits) == pytest.approx(res.rounds[1].test_acc, abs=1e-9)
    bare = swamp_ext.run_imp(cfg, digits, progress=False, keep_rounds=False)
    with pytest.raises(ValueError, match="round 0 was not kept"):
        bare.round(0)


def test_damaged_or_missing_run_files_are_named(tmp_path, digits):
    with pytest.raises(FileNotFoundError, match="not a swamp_ext run folder"):
        swamp_ext.load_run(tmp_path / "nothing")
    cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=2, epochs=2)
    swamp_ext.run_imp(cfg, digits, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "rounds" / "round_000.safetensors"
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    loaded = swamp_ext.load_run(tmp_path)  # the last round is intact
    with pytest.raises(ValueError, match="round_000.safetensors"):
        loaded.round(0)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="round 0 was not kept"):
        loaded.round(0)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        swamp_ext.load_run(tmp_path)


@pytest.mark.parametrize("shape", [[1], [7], [8], [9], [3, 5, 2], [300, 784]])
def test_bit_packing_round_trips(shape):
    g = torch.Generator().manual_seed(sum(shape))
    m = torch.rand(shape, generator=g) > 0.5
    p = pack_bits(m)
    assert p.dtype == torch.uint8 and p.numel() == (m.numel() + 7) // 8
    assert torch.equal(unpack_bits(p, shape), m)
    with pytest.raises(ValueError, match="does not hold shape"):
        unpack_bits(p, [m.numel() + 8])


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, digits):
    """imp and swamp-2, two seeds each, 4 rounds of 50% (0, 50, 75, 87.5% sparsity)."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for method in ("imp", "swamp"):
        for seed in (0, 1):
            d = root / f"{method}{seed}"
            cfg = swamp_ext.Config(model="lenet_300_100", method=method, particles=2, rounds=4,
                                   epochs=2, seed=seed, prune_ratio=0.5)
            swamp_ext.run_imp(cfg, digits, progress=False, checkpoint_dir=d)
            dirs.append(d)
    return dirs


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "swamp_ext", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_show_gives_the_run_at_a_glance(run_dirs):
    from swamp_ext import report

    res = swamp_ext.load_run(run_dirs[2])
    text = report.show(res, "x")
    assert "swamp-2 on digits with lenet_300_100, 2 particles" in text
    assert len([ln for ln in text.splitlines() if ln.strip()[:1].isdigit()]) == 4
    best = report.best_within(res)
    dense = res.rounds[0].test_acc
    assert best.test_acc >= dense - 0.01
    assert all(r.test_acc < dense - 0.01 for r in res.rounds if r.sparsity > best.sparsity)
    assert f"round {best.round}" in text.splitlines()[-1]
    cli = _cli("show", run_dirs[0], run_dirs[2])
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.count("sparsest within 1 point of dense") == 2


def test_compare_tables_methods_against_imp_with_the_seed_spread(run_dirs):
    import statistics

    from swamp_ext import report

    runs = [swamp_ext.load_run(d) for d in run_dirs]
    groups = report.group(runs)
    assert [(g.label, len(g.runs)) for g in groups] == [("imp", 2), ("swamp-2", 2)]
    table = report.compare(runs, at=[0.5, 0.75, 0.99])
    lines = table.splitlines()
    swamp = next(ln for ln in lines if ln.startswith("swamp-2"))
    # by hand: the swamp runs' accuracy at 75% sparsity, mean and spread, and minus imp's
    acc = [r.rounds[2].test_acc for r in runs[2:]]
    imp = [r.rounds[2].test_acc for r in runs[:2]]
    m, sd = statistics.fmean(acc), statistics.stdev(acc)
    d = m - statistics.fmean(imp)
    assert f"{100 * m:.2f} ± {100 * sd:.2f} ({100 * d:+.2f}" in swamp
    assert swamp.rstrip().endswith("—")  # no round near 99%
    md = report.compare(runs, at=[0.5], markdown=True)
    assert "| method | seeds | 50% |" in md and "| swamp-2 | 2 |" in md
    cli = _cli("compare", *run_dirs, "--at", 50, 75, "--markdown")
    assert cli.returncode == 0, cli.stderr
    assert "| imp | 2 |" in cli.stdout
    bad = _cli("compare", run_dirs[0], "--at", 150)
    assert bad.returncode == 2 and "fractions in [0, 1)" in bad.stderr


def test_mask_overlap_per_layer_and_overall(run_dirs):
    a, b = swamp_ext.load_run(run_dirs[0]), swamp_ext.load_run(run_dirs[1])
    ra, rb = a.round(2), b.round(2)
    ov = swamp_ext.analysis.mask_overlap(ra, rb)
    assert set(ov) == set(ra.masks) | {""}
    inter = uni = 0
    for name, m in ra.masks.items():
        i = int((m & rb.masks[name]).sum())
        u = int((m | rb.masks[name]).sum())
        assert ov[name].intersection == i and ov[name].union == u
        assert ov[name].iou == pytest.approx(i / u)
        inter, uni = inter + i, uni + u
    assert ov[""].iou == pytest.approx(inter / uni)
    assert swamp_ext.analysis.mask_overlap(ra, ra)[""].iou == 1.0
    # independent random masks of density d overlap by about d / (2 - d)
    g = torch.Generator().manual_seed(0)
    r1 = {"w": torch.rand(100_000, generator=g) < 0.25}
    r2 = {"w": torch.rand(100_000, generator=g) < 0.25}
    assert swamp_ext.analysis.mask_overlap(r1, r2)["w"].iou == pytest.approx(0.25 / 1.75, abs=0.01)
    with pytest.raises(ValueError, match="'w' has shape"):
        swamp_ext.analysis.mask_overlap(r1, {"w": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="masked in the first run only"):
        swamp_ext.analysis.mask_overlap({**r1, "v": r1["w"]}, r2)
    cli = _cli("analyze", "overlap", run_dirs[0], run_dirs[1], "--round", 2)
    assert cli.returncode == 0, cli.stderr
    assert f"IoU {ov[''].iou:.4f}" in cli.stdout


def test_compare_defaults_to_the_sparsities_the_runs_reached(run_dirs):
    """The runs reach 50 / 75 / 87.5%: the fixed list (50 80 90 95 98 99) would leave most
    columns empty, so compare shows the reached ones, and every cell has a value."""
    cli = _cli("compare", *run_dirs)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    head = lines[1].split()
    assert head[2:] == ["50%", "75%", "87.5%"], lines[1]
    for ln in lines[2:4]:
        assert "—" not in ln, ln


def test_default_sparsities_keep_the_fixed_list_when_it_fits_and_stay_few():
    from types import SimpleNamespace

    from swamp_ext import report

    def run(ratio, rounds):
        return SimpleNamespace(rounds=[SimpleNamespace(sparsity=1 - (1 - ratio) ** k)
                                       for k in range(rounds)])

    # 20% a round for 22 rounds passes near every point of the fixed list
    assert report.default_at([run(0.2, 22)]) == report.DEFAULT_AT
    # 50% a round, 8 rounds: the reached sparsities, dense left out
    assert report.default_at([run(0.5, 8)]) == tuple(1 - 0.5 ** k for k in range(1, 8))
    # two seeds of one schedule count once; a sparsity within 15% (by remaining weights) too
    twice = report.default_at([run(0.5, 4), run(0.5, 4), run(0.51, 4)])
    assert twice == (0.5, 0.75, 0.875)
    # many distinct sparsities: at most MAX_COLUMNS, least and most sparse kept
    many = report.default_at([run(0.3, 30)])
    assert len(many) == report.MAX_COLUMNS
    assert many[0] == pytest.approx(0.3) and many[-1] == pytest.approx(1 - 0.7 ** 29)
    assert list(many) == sorted(many)
