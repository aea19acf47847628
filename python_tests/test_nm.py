"""N:M structured masks (Config.pruning "N:M"): the pruner against a reference written here on
every zoo model's weights, the round-by-round steps of a run (IMP and SWAMP, a zoo model and a
user's module), resume, export, and refusals by name."""

from __future__ import annotations

import pytest
import torch
from test_models import SHAPES
from torch import nn

import swamp_ext
from swamp_ext import Config, datasets, models, ops, run_imp


def reference_nm(w: torch.Tensor, mask: torch.Tensor, keep: int, m: int) -> torch.Tensor:
    """Keep, per group of m along the flattened rows, the `keep` largest |w| among the unpruned
    (ties: lower position), by sorting each group in Python."""
    rows = w.reshape(w.shape[0], -1)
    mk = mask.reshape(rows.shape)
    out = torch.zeros_like(mk)
    for r in range(rows.shape[0]):
        for g0 in range(0, rows.shape[1], m):
            alive = [j for j in range(g0, g0 + m) if mk[r, j]]
            alive.sort(key=lambda j: (-abs(float(rows[r, j])), j))
            for j in alive[:keep]:
                out[r, j] = True
    return out.reshape(mask.shape)


def groups_ok(mask: torch.Tensor, n: int, m: int) -> bool:
    g = mask.reshape(mask.shape[0], -1).reshape(-1, m).sum(1)
    return bool((g == n).all())


def test_the_pruner_keeps_the_largest_of_each_group_with_ties_to_the_lower_position(gen):
    w = torch.randn(6, 16, generator=gen)
    w[0, :4] = 0.5  # a tied group
    w[1, 4:8] = torch.tensor([0.3, -0.3, 0.3, 0.1])
    mask = torch.ones_like(w, dtype=torch.bool)
    mask[2, 0] = False  # already pruned: never chosen again
    for keep in (3, 2, 1):
        new = ops.nm_prune([w], [mask], keep, 4)[0]
        assert torch.equal(new, reference_nm(w, mask, keep, 4))
        assert not (new & ~mask).any()  # nothing comes back
        mask = new
    assert mask[0, :4].tolist() == [True, False, False, False]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_zoo_model_takes_the_pattern_where_its_rows_fit(name):
    state, prunable = models.create(name, SHAPES[name], 10, seed=3)
    ws = [state[n] for n in prunable]
    masks = None
    for keep in (3, 2):
        new = ops.nm_prune(ws, masks, keep, 4)
        for n, w, m in zip(prunable, ws, new):
            if ops.nm_fits(w, 4):
                assert groups_ok(m, keep, 4), n
                prev = torch.ones_like(m) if masks is None else masks[prunable.index(n)]
                if w.numel() <= 40_000:  # the Python reference is slow on the big layers
                    assert torch.equal(m, reference_nm(w, prev, keep, 4)), n
            else:  # e.g. a first conv over 1 or 3 channels: 9 or 27 entries per row
                assert bool(m.all()) and (w[0].numel() % 4) != 0, n
        masks = new
    assert any(ops.nm_fits(w, 4) for w in ws)


@pytest.mark.parametrize("pruning, rounds, msg", [
    ("5:4", 3, "1 <= N < M"), ("0:4", 5, "1 <= N < M"), ("2:300", 3, "1 <= N < M"),
    ("2:4", 2, "needs rounds >= 3"), ("1:8", 5, "needs rounds >= 8"),
    ("2-4", 3, "global, layerwise, random or an N:M pattern"),
])
def test_patterns_that_cannot_be_met_are_refused_by_name(pruning, rounds, msg):
    with pytest.raises(ValueError, match=msg):
        Config(model="lenet_300_100", pruning=pruning, rounds=rounds, epochs=2)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


CFG = dict(model="lenet_300_100", pruning="2:4", rounds=3, epochs=2, seed=7, lr=0.05)


@pytest.mark.parametrize("method, particles", [("imp", 1), ("swamp", 2)])
def test_a_run_steps_from_dense_to_the_pattern_one_weight_a_round(digits, method, particles,
                                                                  tmp_path):
    seen = []
    res = run_imp(Config(**CFG, method=method, particles=particles), digits, progress=False,
                  checkpoint_dir=tmp_path, on_models=seen.append)
    assert [round(r.sparsity, 6) for r in res.rounds] == [0.0, 0.25, 0.5]
    for rm in seen:
        for n, m in rm.masks.items():
            assert groups_ok(m, 4 - rm.round, 4), (rm.round, n)
        # the mask of the next round keeps the largest |w| of this round's average
        if rm.round + 1 < len(seen):
            nxt = seen[rm.round + 1].masks
            for n, m in rm.masks.items():
                assert torch.equal(nxt[n], reference_nm(rm.average[n], m, 3 - rm.round, 4))
    assert res.dense_layers == []
    for n, m in res.masks.items():
        assert groups_ok(m, 2, 4) and not (res.state_dict()[n][~m] != 0).any()
    # the pattern survives the run folder and export
    loaded = swamp_ext.load_run(tmp_path)
    from swamp_ext.export import export, load_csr

    state = load_csr(export(loaded, tmp_path / "m.csr", fmt="csr").path)
    for n in res.masks:
        assert groups_ok(state[n] != 0, 2, 4) or groups_ok(res.masks[n], 2, 4)
        assert not (state[n][~res.masks[n]] != 0).any()


def test_an_interrupted_or_extended_pattern_run_equals_the_uninterrupted_one(digits, tmp_path):
    cfg = dict(CFG, rounds=3)

    def stop(rec):
        if rec.round == 1:
            raise RuntimeError("stopped after round 1")

    with pytest.raises(RuntimeError, match="stopped after round 1"):
        run_imp(Config(**cfg), digits, progress=False, checkpoint_dir=tmp_path, on_round=stop)
    resumed = run_imp(Config(**cfg), digits, progress=False, checkpoint_dir=tmp_path)
    assert len(resumed.rounds) == 3
    longer = run_imp(Config(**dict(cfg, rounds=4)), digits, progress=False,
                     checkpoint_dir=tmp_path)
    direct = run_imp(Config(**dict(cfg, rounds=4)), digits, progress=False)
    assert [r.test_acc for r in longer.rounds] == [r.test_acc for r in direct.rounds]
    for n in direct.masks:
        assert torch.equal(longer.masks[n], direct.masks[n]) and groups_ok(direct.masks[n], 2, 4)


class Odd(nn.Module):
    def __init__(self, hidden: int = 30) -> None:
        super().__init__()
        self.a = nn.Linear(64, hidden)
        self.b = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1))))


def test_a_users_module_keeps_unfit_layers_dense_and_names_them(digits):
    res = run_imp(Config(pruning="2:4", rounds=3, epochs=2, seed=1), digits,
                  model=Odd(), progress=False)
    assert res.dense_layers == ["b.weight"]  # rows of 30 are not whole groups of 4
    assert groups_ok(res.masks["a.weight"], 2, 4)


def test_a_pattern_no_layer_fits_is_refused_naming_the_layers(digits):
    class Narrow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(64, 6)
            self.b = nn.Linear(6, 10)

        def forward(self, x):
            return self.b(torch.relu(self.a(x.flatten(1))))

    with pytest.raises(ValueError, match=r"groups of 7 .*a\.weight \(64\).*b\.weight \(6\)") as e:
        run_imp(Config(pruning="2:7", rounds=6, epochs=2), digits, model=Narrow(),
                progress=False)
    assert "a.weight (64)" in str(e.value)
