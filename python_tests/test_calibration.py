"""Calibration in every round's record: the expected calibration error (15 equal-width confidence
bins) of the final model and of the particles' ensemble, against the same figure computed here
from the models' own predictions."""

from __future__ import annotations

import json
import math

import torch

import swamp_ext


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Guo et al. 2017: samples binned by top probability into (b/B, (b+1)/B]."""
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            gap = (pred[sel] == y[sel]).double().mean() - conf[sel].mean()
            total += float(sel.double().mean() * gap.abs())
    return total


def probs_of(state, cfg, data):
    net = swamp_ext.models.to_torch(cfg.model, state, data.input_shape, data.num_classes)
    with torch.no_grad():
        return torch.softmax(net(data.x_test).double(), 1)


def test_ece_of_the_final_model_and_the_ensemble_match_their_predictions(tmp_path):
    data = swamp_ext.datasets.load("digits")
    cfg = swamp_ext.Config(model="lenet_300_100", particles=3, rounds=2, epochs=3, seed=4)
    seen = []
    res = swamp_ext.run_imp(cfg, data, progress=False, on_models=seen.append,
                            checkpoint_dir=tmp_path)
    y = data.y_test
    for rec, rm in zip(res.rounds, seen):
        assert 0.0 <= rec.test_ece <= 1.0 and 0.0 <= rec.ensemble_ece <= 1.0
        mine = ece(probs_of(rm.average, cfg, data), y)
        assert math.isclose(rec.test_ece, mine, abs_tol=1e-5), (rec.test_ece, mine)
        ens = torch.stack([probs_of(p, cfg, data) for p in rm.particles]).mean(0)
        assert math.isclose(rec.ensemble_ece, ece(ens, y), abs_tol=1e-5)
    # the reference itself: certain and always wrong is ECE 1, the records are not constant
    wrong = torch.nn.functional.one_hot((y + 1) % 10, 10).double()
    assert ece(wrong, y) == 1.0
    assert len({r.test_ece for r in res.rounds}) == len(res.rounds)
    saved = json.loads((tmp_path / "results.json").read_text())["rounds"]
    assert [r["test_ece"] for r in saved] == [r.test_ece for r in res.rounds]
    assert [r["ensemble_ece"] for r in saved] == [r.ensemble_ece for r in res.rounds]


def _fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_rounds_recorded_before_calibration_resume_without_it(tmp_path):
    # a checkpoint whose round records lack the ECE lines (as an earlier swamp_ext wrote them)
    # still resumes: those rounds report None, new rounds the figure
    from swamp_ext.testing import read_checkpoint, write_checkpoint

    data = swamp_ext.datasets.load("digits")
    cfg = swamp_ext.Config(model="lenet_300_100", particles=2, rounds=2, epochs=2)
    swamp_ext.run_imp(cfg, data, progress=False, checkpoint_dir=tmp_path)
    path = str(tmp_path / "checkpoint.swamp")
    m = read_checkpoint(path)
    for k in ("result/0", "result/1"):
        body = bytes(m[k].tolist()).decode().split("\ncheck=")[0]
        body = "\n".join(ln for ln in body.split("\n") if "_ece=" not in ln)
        text = body + f"\ncheck={_fnv1a(body.encode()):016x}"
        m[k] = torch.tensor(list(text.encode()), dtype=torch.uint8)
    write_checkpoint(path, m)
    res = swamp_ext.run_imp(swamp_ext.Config(**{**cfg.to_dict(), "rounds": 3}), data,
                            progress=False, checkpoint_dir=tmp_path)
    assert [r.test_ece is None for r in res.rounds] == [True, True, False]
    assert res.rounds[2].ensemble_ece is not None
    saved = json.loads((tmp_path / "results.json").read_text())["rounds"]
    assert [r["test_ece"] is None for r in saved] == [True, True, False]
