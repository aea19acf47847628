"""Tests that pin the method itself: SWA, the uniform average, pruning from the average, rewinding
to the ticket, batch-norm recomputation and the ensemble. Expectations are computed here
independently (plain PyTorch on the models the run reports through ``on_models`` / ``on_ticket``),
never copied from the implementation."""

import math

import pytest
import torch

from swamp_ext import Config, datasets, models, run_imp


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def cfg(**kw):
    base = dict(model="lenet_300_100", method="swamp", particles=3, rounds=2, epochs=4,
                rewind_epochs=1, batch_size=64, lr=0.05, seed=5, prune_ratio=0.5)
    base.update(kw)
    return Config(**base)


def collect(config, data, **kw):
    seen = {"rounds": [], "ticket": None}
    res = run_imp(config, data, progress=False, on_models=seen["rounds"].append,
                  on_ticket=lambda t: seen.__setitem__("ticket", t), **kw)
    return res, seen


def test_swa_is_the_uniform_mean_of_the_epoch_ends_from_swa_start(digits):
    # With a constant learning rate equal to swa_lr the SWA phase does not change the
    # trajectory, so the weights at the end of epoch k are the final weights of the same run
    # (without SWA) cut to k epochs. swa_start=0.5 of 4 epochs: snapshots after epochs 3 and 4.
    common = dict(method="imp", rounds=1, schedule="constant", lr=0.05, swa_lr=0.05,
                  weight_decay=0.0)
    swa, _ = collect(cfg(use_swa=True, swa_start=0.5, **common), digits)
    ends = {k: collect(cfg(use_swa=False, epochs=k, **common), digits)[0].state_dict()
            for k in (2, 3, 4)}
    got = swa.state_dict()
    for name in got:
        expected = (ends[3][name].double() + ends[4][name].double()) / 2
        torch.testing.assert_close(got[name].double(), expected, rtol=1e-5, atol=1e-6)
    # not the last weights alone, nor an average that includes epoch 2
    w = "fc1.weight"
    assert not torch.allclose(got[w], ends[4][w], atol=1e-5)
    three = (ends[2][w] + ends[3][w] + ends[4][w]) / 3
    assert not torch.allclose(got[w], three, atol=1e-5)
    # and imp_swa (SWA on by default) is that run, imp (off) is not
    imp_swa, _ = collect(cfg(method="imp_swa", swa_start=0.5, **{k: v for k, v in common.items()
                                                                  if k != "method"}), digits)
    assert all(torch.equal(imp_swa.state_dict()[k], got[k]) for k in got)


def test_final_model_is_the_mean_of_the_particles_and_the_mask_comes_from_it(digits):
    res, seen = collect(cfg(rounds=3), digits)
    rounds = seen["rounds"]
    assert [r.round for r in rounds] == [0, 1, 2]
    for r in rounds:
        assert len(r.particles) == 3
        for name, avg in r.average.items():
            mean = sum(p[name].double() for p in r.particles) / 3
            if name in r.masks:
                mean = mean * r.masks[name]
            torch.testing.assert_close(avg.double(), mean, rtol=1e-6, atol=1e-7)
        # the particles differ (different batch orders): the mean is not one of them
        w = rounds[0].particles
        assert not torch.allclose(w[0]["fc1.weight"], w[1]["fc1.weight"], atol=1e-4)
    # round r+1 trains under the mask pruned from round r's average: the new mask is inside the
    # old one, removes half of the remaining weights globally, and every weight kept has a
    # larger magnitude in the average than every weight removed
    for prev, nxt in zip(rounds, rounds[1:]):
        kept_mag, removed_mag = [], []
        before = after = 0
        for name, old in prev.masks.items():
            new = nxt.masks[name]
            assert not (new & ~old).any(), "a pruned weight came back"
            mag = prev.average[name].abs()
            kept_mag.append(mag[new])
            removed_mag.append(mag[old & ~new])
            before += int(old.sum())
            after += int(new.sum())
        assert abs((before - after) - 0.5 * before) <= 1
        assert torch.cat(kept_mag).min() >= torch.cat(removed_mag).max()
    for name, m in res.masks.items():  # the result's masks are the last round's
        assert torch.equal(m, rounds[-1].masks[name])


def test_each_round_rewinds_to_the_ticket_under_the_mask(digits):
    # rewind_steps = all but one step: a round is a single SGD step from wherever it rewinds
    # to, so the particle sits next to its starting point
    data = digits
    steps_per_epoch = data.x_train.shape[0] // 64
    total = 2 * steps_per_epoch
    config = cfg(method="imp", use_swa=False, rounds=3, epochs=2, rewind_steps=total - 1,
                 momentum=0.0, weight_decay=0.0, lr=0.01, schedule="constant")
    _, seen = collect(config, data)
    ticket = seen["ticket"]
    for prev, r in zip([None] + seen["rounds"], seen["rounds"]):
        p = r.particles[0]["fc1.weight"]
        start = ticket["fc1.weight"] * r.masks["fc1.weight"]
        to_ticket = (p - start).norm().item()
        assert to_ticket < 0.01 * start.norm().item()
        if prev is not None:  # not the previous round's solution
            assert (p - prev.average["fc1.weight"]).norm().item() > 10 * to_ticket
    # the ticket itself trained for rewind_steps from the initialisation
    init, _ = models.create("lenet_300_100", data.input_shape, 10, seed=0)
    assert not torch.allclose(ticket["fc1.weight"], init["fc1.weight"])


def test_batchnorm_statistics_of_every_layer_are_recomputed_for_the_average(digits):
    config = cfg(model="conv4_small", rounds=1, particles=2, epochs=2, bn_batch_size=100)
    _, seen = collect(config, digits)
    r = seen["rounds"][0]
    avg = r.average
    bn_names = [k[: -len(".running_mean")] for k in avg if k.endswith(".running_mean")]
    assert len(bn_names) >= 2
    # independently: the averaged weights in a plain PyTorch model, statistics reset and
    # accumulated cumulatively (momentum None) over the training set in batches of 100, the
    # last partial batch dropped
    net = models.to_torch("conv4_small", avg, digits.input_shape, 10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    x = digits.x_train
    with torch.no_grad():
        for s in range(0, x.shape[0] - 100 + 1, 100):
            net(x[s:s + 100])
    ref = net.state_dict()
    for name in bn_names:
        for stat in ("running_mean", "running_var"):
            torch.testing.assert_close(avg[f"{name}.{stat}"], ref[f"{name}.{stat}"],
                                       rtol=1e-4, atol=1e-5)
        # not the statistics of either particle
        assert not torch.allclose(avg[f"{name}.running_var"],
                                  r.particles[0][f"{name}.running_var"], rtol=1e-3)


def test_ensemble_is_the_mean_of_the_particles_probabilities(digits):
    res, seen = collect(cfg(rounds=1, particles=3), digits)
    r = seen["rounds"][0]
    probs = []
    with torch.no_grad():
        for p in r.particles:
            net = models.to_torch("lenet_300_100", p, digits.input_shape, 10)
            probs.append(torch.softmax(net(digits.x_test).double(), 1))
    mean = torch.stack(probs).mean(0)
    nll = -mean.gather(1, digits.y_test.view(-1, 1)).log().mean().item()
    acc = (mean.argmax(1) == digits.y_test).double().mean().item()
    rec = res.rounds[0]
    assert rec.ensemble_nll == pytest.approx(nll, rel=1e-5)
    assert rec.ensemble_acc == pytest.approx(acc, abs=1e-12)
    # and it is not the mean of the log-probabilities (the geometric ensemble)
    geo = torch.stack([p.log() for p in probs]).mean(0)
    geo_nll = -(geo.log_softmax(1)).gather(1, digits.y_test.view(-1, 1)).mean().item()
    assert not math.isclose(rec.ensemble_nll, geo_nll, rel_tol=1e-4)


def test_step_schedule_decays_below_swa_lr_then_switches_to_it(digits):
    # schedule="step": lr, lr/10 from half of the main phase, lr/100 from three quarters; then
    # the constant swa_lr from the SWA start (8 epochs, swa_start 0.75: epoch 6). Each epoch
    # reports the learning rate of its last step.
    lrs = {}

    def prog(p):
        if p.round == 0 and p.particle == 0:
            lrs[p.epoch] = p.lr

    run_imp(cfg(method="imp_swa", rounds=1, epochs=8, schedule="step", lr=0.1, swa_lr=0.05),
            digits, progress=prog)
    got = [lrs[e] for e in range(2, 9)]
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001, 0.05, 0.05])


@pytest.mark.parametrize("kw, message", [
    (dict(epochs=1, rewind_epochs=0), "SWA would start at epoch 0"),
    (dict(epochs=4, warmup_epochs=3.5), "warmup_epochs"),
    (dict(epochs=8, rewind_epochs=7, swa_start=0.5), "before the rewind point"),
])
def test_swa_phase_conflicts_are_refused(digits, kw, message):
    with pytest.raises(ValueError, match=message):
        run_imp(cfg(**kw), digits, progress=False)
    # without SWA the same settings are a valid run
    if "warmup_epochs" not in kw:
        cfg(use_swa=False, **kw)
