"""Data parallel inside a particle: more processes than a round has particles. torchrun jobs of
2, 3 and 4 ranks (gloo on localhost, one thread each) against the same runs in one process: the
layouts (n = 1, n = P, n < P, leftovers, a round-to-round change), sharded batches (zoo data with
augmentation, a torch Dataset with random transforms through its workers, a module that draws
dropout), mixed precision, local batch-norm statistics, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_distributed import _cli, _torchrun

import swamp_ext
from swamp_ext import _C

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed not available")


@pytest.mark.parametrize("world,n,groups", [
    (1, 1, [[0]]),
    (2, 1, [[0, 1]]),  # IMP and the ticket: every process
    (2, 2, [[0], [1]]),  # n = P: today's one particle each
    (2, 3, [[0], [1], [1]]),  # n > P: contiguous shares
    (4, 2, [[0, 1], [2, 3]]),
    (8, 3, [[0, 1], [2, 3], [4, 5]]),  # 6 and 7 sit the round out
    (3, 2, [[0], [1]]),  # 2 sits the round out
])
def test_the_layout_rule(world, n, groups):
    assert _C.data_parallel_groups(world, n) == groups
    with pytest.raises(ValueError, match="data_parallel_groups"):
        _C.data_parallel_groups(world, 0)


@pytest.mark.parametrize("world,cfg,says", [
    (2, dict(method="imp"), "2 processes; rounds of 1 particle: 2 processes per particle (data "
                            "parallel)"),
    (8, dict(method="swamp_plus", particles=4, rounds=4),
     "rounds of 1 particle: 8 processes per particle (data parallel); rounds of 4 particles: 2 "
     "processes per particle"),
    (3, dict(method="swamp", particles=2), "rounds of 2 particles: 1 process per particle, 1 idle"),
    (2, dict(method="swamp", particles=3), "rounds of 3 particles: 1 or 2 particles per process"),
])
def test_the_command_line_says_the_layout(world, cfg, says):
    from swamp_ext.distributed import describe_layout

    assert says in describe_layout(world, swamp_ext.Config(model="lenet_300_100", **cfg))


_PAIRS = r"""
import json, sys, torch, swamp_ext
sys.path.insert(0, {tests!r})
from injected import Poisoned
from datetime import timedelta
torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=120))
rank = torch.distributed.get_rank()
digits = swamp_ext.datasets.load("digits")
out = {}

FIGURES = ("test_acc", "test_nll", "test_ece", "ensemble_acc", "ensemble_nll", "train_loss")

def compare(name, cfg, data, **kw):
    spread = swamp_ext.run_imp(cfg, data, progress=False, **kw)
    alone = swamp_ext.run_imp(cfg, data, progress=False, process_group=False, **kw)
    total = sum(m.numel() for m in alone.masks.values())
    same = sum(int((spread.masks[k] == alone.masks[k]).sum()) for k in alone.masks)
    a, s = alone.state_dict(), spread.state_dict()
    out[name] = dict(
        masks=same / total,
        diff=max(float((a[k].double() - s[k].double()).abs().max()) for k in a),
        acc=[r.test_acc for r in spread.rounds], acc_alone=[r.test_acc for r in alone.rounds],
        figures=[[getattr(r, f) for f in FIGURES] for r in spread.rounds],
        figures_alone=[[getattr(r, f) for f in FIGURES] for r in alone.rounds],
        sparsity=[r.sparsity for r in spread.rounds],
        sparsity_alone=[r.sparsity for r in alone.rounds],
        skipped=[r.skipped_steps for r in spread.rounds],
        skipped_alone=[r.skipped_steps for r in alone.rounds],
        layout=[[r.processes, r.processes_per_particle] for r in spread.rounds],
        layout_alone=[[r.processes, r.processes_per_particle] for r in alone.rounds])

{cases}
with open(f"{sys.argv[1]}/report{rank}.json", "w") as f:
    json.dump({"rank": rank, **out}, f)
torch.distributed.destroy_process_group()
"""

_TWO = r"""
lenet = dict(model="lenet_300_100", rounds=3, epochs=3, seed=5, data_parallel="always")
compare("imp", swamp_ext.Config(method="imp", **lenet), digits)
# SWAMP+: round 0 one particle on both processes, then one particle each
compare("swamp_plus", swamp_ext.Config(method="swamp_plus", particles=2,
                                       single_particle_rounds=1, **lenet), digits)
compare("bf16", swamp_ext.Config(method="imp", precision="bf16", **lenet), digits)
compare("fp16", swamp_ext.Config(method="imp", precision="fp16", **lenet), digits)

# an fp16 overflow injected on chosen training forwards of one process only
torch.manual_seed(0)
module = Poisoned()
cfg = swamp_ext.Config(method="imp", precision="fp16", particle_mode="sequential", rounds=2,
                       epochs=3, seed=5, data_parallel="always")
Poisoned.calls, Poisoned.poison = 0, set()
clean = swamp_ext.run_imp(cfg, digits, model=module, progress=False)
Poisoned.calls, Poisoned.poison = 0, ({15, 16, 40} if rank == 1 else set())
hit = swamp_ext.run_imp(cfg, digits, model=module, progress=False)
state = hit.state_dict()
out["poison"] = dict(
    clean=sum(r.skipped_steps for r in clean.rounds),
    hit=[r.skipped_steps for r in hit.rounds],
    finite=all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()),
    weights=sum(float(v.double().abs().sum()) for v in state.values()),
    acc=hit.rounds[-1].test_acc)

# one SGD step (the ticket at step 1): float rounding only; with batch norm, each process
# normalises its shard with the shard's own statistics (as DistributedDataParallel)
for model in ("lenet_300_100", "conv4_small"):
    cfg = swamp_ext.Config(model=model, method="imp", rounds=1, epochs=1, rewind_epochs=0,
                           rewind_steps=1, data_parallel="always")
    tickets = []
    for group in (None, False):
        swamp_ext.run_imp(cfg, digits, progress=False, process_group=group,
                          on_ticket=tickets.append)
    out["step_" + model] = max(float((tickets[0][k].double() - tickets[1][k].double())
                                     .abs().max()) for k in tickets[0]
                               if tickets[0][k].is_floating_point() and "running" not in k)

# Config.sync_batchnorm: the statistics of the whole batch, forward and backward: one step is
# float rounding again, for the zoo's batch norm and for nn.BatchNorm2d in your module
class BnNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1),
                                        torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                        torch.nn.Flatten(), torch.nn.Linear(8 * 64, 32),
                                        torch.nn.BatchNorm1d(32, momentum=None),
                                        torch.nn.ReLU(), torch.nn.Linear(32, 10))
    def forward(self, x):
        return self.body(x)

for name, kw in (("zoo", dict(model="conv4_small")), ("module", {})):
    cfg = swamp_ext.Config(method="imp", rounds=1, epochs=1, rewind_epochs=0, rewind_steps=1,
                           sync_batchnorm=True, data_parallel="always", **kw)
    tickets = []
    for group in (None, False):
        torch.manual_seed(0)
        extra = {} if name == "zoo" else dict(model=BnNet())
        swamp_ext.run_imp(cfg, digits, progress=False, process_group=group,
                          on_ticket=tickets.append, **extra)
    out["sync_step_" + name] = max(float((tickets[0][k].double() - tickets[1][k].double())
                                         .abs().max()) for k in tickets[0]
                                   if tickets[0][k].is_floating_point())
    out["sync_tracked_" + name] = [int(v) for k, v in tickets[0].items()
                                   if k.endswith("num_batches_tracked")]
compare("sync_bn", swamp_ext.Config(model="conv4_small", method="imp", rounds=3, epochs=3,
                                    seed=5, sync_batchnorm=True, data_parallel="always"), digits)
compare("local_bn", swamp_ext.Config(model="conv4_small", method="imp", rounds=3, epochs=3,
                                     seed=5, data_parallel="always"), digits)
torch.manual_seed(0)
compare("sync_bn_module", swamp_ext.Config(method="imp", rounds=2, epochs=2, seed=5,
                                           sync_batchnorm=True, data_parallel="always"), digits,
        model=BnNet())
# Config.data_parallel="never": one process trains the particle (and the ticket, handed to the
# other): the one-process run exactly; "auto" keeps lenet_300_100 (too little compute per
# parameter) on one process and trains conv4_small data parallel
compare("never", swamp_ext.Config(model="lenet_300_100", method="imp", rounds=3, epochs=3,
                                  seed=5, data_parallel="never"), digits)
compare("never_swamp_plus", swamp_ext.Config(model="conv4_small", method="swamp_plus",
                                             particles=2, single_particle_rounds=1, rounds=2,
                                             epochs=2, seed=5, data_parallel="never"), digits)
compare("auto_lenet", swamp_ext.Config(model="lenet_300_100", method="imp", rounds=2, epochs=2,
                                       seed=5), digits)

# Config.augment: crop and flip drawn for the whole batch, each shard keeps its samples' draws
m = swamp_ext.datasets.load("mnist5k")
small = swamp_ext.datasets.from_arrays(m.x_train[:1024], m.y_train[:1024], m.x_test[:256],
                                       m.y_test[:256], 10)
compare("augment", swamp_ext.Config(model="lenet5", method="imp", rounds=2, epochs=2,
                                    augment=True, crop_padding=2, seed=1,
                                    data_parallel="always"), small)

# the gradient all-reduce runs in buckets during backward: what the counters saw
from swamp_ext import distributed as spread
spread.gradient_sync_stats(reset=True)
cfg = swamp_ext.Config(model="conv4_small", method="imp", rounds=1, epochs=2, seed=5,
                       data_parallel="always")
swamp_ext.run_imp(cfg, small, progress=False)
state = swamp_ext.models.create("conv4_small", list(small.input_shape), small.num_classes)[0]
stats = spread.gradient_sync_stats(reset=True)
out["timing_buckets"] = {k: stats.pop(k) for k in ("in_flight_s", "blocked_s")}
out["buckets"] = dict(
    stats=stats, steps=2 * (small.x_train.shape[0] // cfg.batch_size),
    sizes=[4 * v.numel() for k, v in state.items()
           if v.is_floating_point() and "running" not in k])

# a torch Dataset with a random transform, fetched by one worker per process (its shard only)
class Noisy(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(self.x[i].shape), int(self.y[i])

torch_data = swamp_ext.datasets.from_torch(Noisy(digits.x_train, digits.y_train),
                                           Noisy(digits.x_test, digits.y_test), 10,
                                           num_workers=1)
compare("torch_data", swamp_ext.Config(model="lenet_300_100", method="imp", rounds=2,
                                       epochs=2, seed=2, data_parallel="always"), torch_data)

# your module that draws dropout: each process its own draws for its shard
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128),
                                        torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                        torch.nn.Linear(128, 10))
    def forward(self, x):
        return self.body(x)

torch.manual_seed(0)
res = swamp_ext.run_imp(swamp_ext.Config(method="imp", rounds=2, epochs=3,
                                         data_parallel="always"), digits,
                        progress=False, model=Net())
out["module"] = dict(acc=[r.test_acc for r in res.rounds],
                     layout=[[r.processes, r.processes_per_particle] for r in res.rounds],
                     state=float(sum(v.double().sum() for v in res.state_dict().values())))

# a parameter your module does not use in a step gets no gradient: its bucket is sent after
# backward (zeros), and the run is the one-process run's
class Unused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64),
                                        torch.nn.ReLU(), torch.nn.Linear(64, 10))
        self.spare = torch.nn.Linear(64, 64)
    def forward(self, x):
        return self.body(x)

torch.manual_seed(0)
compare("unused", swamp_ext.Config(method="imp", rounds=2, epochs=2, seed=5,
                                   data_parallel="always"), digits, model=Unused())

# SWAMP-2 with one particle per process (the ticket trained by one, "never"): each process
# evaluates half of the average's test batches and recomputes half of its batch-norm
# statistics; the figures are the one-process ones
compare("shared_eval", swamp_ext.Config(model="conv4_small", method="swamp", particles=2,
                                        rounds=2, epochs=2, seed=5, data_parallel="never"),
        digits)
compare("shared_eval_module", swamp_ext.Config(method="swamp", particles=2, rounds=2, epochs=2,
                                               seed=5, data_parallel="never"), digits,
        model=BnNet())

try:
    swamp_ext.run_imp(swamp_ext.Config(model="lenet_300_100", method="imp", rounds=1, epochs=1,
                                       rewind_epochs=0, batch_size=1, data_parallel="always"),
                      digits, progress=False)
    out["refused"] = ""
except ValueError as e:
    out["refused"] = str(e)
"""


def _job(where: Path, cases: str, world: int) -> dict:
    """Runs the cases on `world` processes; the report of rank 0 (every rank's is the same)."""
    script = where / "job.py"
    script.write_text(_PAIRS.replace("{tests!r}", repr(str(Path(__file__).parent)))
                      .replace("{cases}", cases))
    job = _cli(_torchrun([str(script), str(where)], ranks=world, module=False), timeout=900)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    reps = [json.loads((where / f"report{r}.json").read_text()) for r in range(world)]
    for r in reps[1:]:  # every process ends with the same result (timings aside)
        assert {k: v for k, v in r.items() if k != "rank" and not k.startswith("timing")} == \
            {k: v for k, v in reps[0].items() if k != "rank" and not k.startswith("timing")}
    return reps[0]


def _agrees(rep, masks=0.99, acc=0.005):
    assert rep["masks"] >= masks, rep
    assert rep["sparsity"] == rep["sparsity_alone"], rep  # exact counts either way
    for a, b in zip(rep["acc"], rep["acc_alone"]):
        assert abs(a - b) <= acc + 1e-12, rep


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return _job(tmp_path_factory.mktemp("dp2"), _TWO, 2)


def test_imp_on_two_processes_agrees_with_one(two):
    rep = two["imp"]
    print(f"\nIMP, 2 processes vs 1: masks {rep['masks']:.6f} equal, weights differ by "
          f"<= {rep['diff']:.3g}; accuracy {rep['acc']} vs {rep['acc_alone']}")
    _agrees(rep)
    assert rep["layout"] == [[2, 2]] * 3 and rep["layout_alone"] == [[1, 1]] * 3


def test_the_layout_changes_from_round_to_round(two):
    rep = two["swamp_plus"]
    _agrees(rep)
    assert rep["layout"] == [[2, 2], [2, 1], [2, 1]]


def test_bf16_data_parallel(two):
    _agrees(two["bf16"], masks=0.98, acc=0.01)


def test_fp16_data_parallel_agrees_with_one_process(two):
    rep = two["fp16"]
    _agrees(rep, masks=0.98, acc=0.01)
    assert rep["skipped"] == rep["skipped_alone"], rep


def test_an_overflow_in_one_process_skips_the_step_in_the_whole_group(two):
    # only process 1 overflows (3 of its 57 forwards: 2 in round 0, 1 in round 1): the
    # overflow decision is taken on the group's summed gradients, so both processes skip those
    # steps and stay identical (_job asserts every rank's report equal, the weights' checksum
    # included)
    rep = two["poison"]
    assert rep["clean"] == 0, rep
    assert rep["hit"] == [2, 1], rep
    assert rep["finite"], rep
    assert rep["acc"] > 0.8, rep


def test_one_step_differs_by_float_rounding_and_batch_norm_is_local(two):
    print(f"\nafter one step: lenet_300_100 {two['step_lenet_300_100']:.3g}, "
          f"conv4_small (batch norm) {two['step_conv4_small']:.3g}")
    assert two["step_lenet_300_100"] <= 1e-6
    # each shard normalised by its own statistics: a real difference, not rounding
    assert two["step_conv4_small"] > 1e-4


def test_sync_batchnorm_makes_data_parallel_the_one_process_run(two):
    print(f"\nafter one step with sync_batchnorm: conv4_small {two['sync_step_zoo']:.3g}, "
          f"your module {two['sync_step_module']:.3g} (running statistics included); "
          f"conv4_small IMP masks {two['sync_bn']['masks']:.6f} equal with, "
          f"{two['local_bn']['masks']:.6f} without")
    # one step: rounding only, running statistics included (the whole batch's, unbiased)
    assert two["sync_step_zoo"] <= 1e-5 and two["sync_step_module"] <= 1e-5
    assert two["sync_tracked_zoo"] and set(two["sync_tracked_zoo"]) == {1}
    assert set(two["sync_tracked_module"]) == {1}
    _agrees(two["sync_bn"], masks=0.999, acc=0.002)
    _agrees(two["sync_bn_module"], masks=0.999, acc=0.002)
    assert two["sync_bn"]["masks"] >= two["local_bn"]["masks"]


def test_data_parallel_never_is_the_one_process_run(two):
    for case in ("never", "never_swamp_plus"):
        rep = two[case]
        assert rep["masks"] == 1.0 and rep["diff"] == 0.0, rep  # bitwise
        assert rep["acc"] == rep["acc_alone"], rep
    assert two["never"]["layout"] == [[2, 1]] * 3
    assert two["never_swamp_plus"]["layout"] == [[2, 1], [2, 1]]
    assert two["auto_lenet"]["layout"] == [[2, 1]] * 2 and two["auto_lenet"]["masks"] == 1.0


def test_gradients_travel_in_buckets_during_backward(two):
    rep = two["buckets"]
    st = {**rep["stats"], **two["timing_buckets"]}
    # DistributedDataParallel's bucket rule, over conv4_small's parameters: in reverse order, a
    # bucket closed once it holds >= 1 MiB (the first) or >= 25 MiB (the others)
    buckets, filled = 1, 0
    for size in reversed(rep["sizes"]):
        if filled >= (1 << 20 if buckets == 1 else 25 << 20):
            buckets, filled = buckets + 1, 0
        filled += size
    print(f"\n{st['steps']} steps, {st['buckets'] / st['steps']:g} buckets a step, "
          f"{st['in_flight_s']:.3f} s in flight, {st['blocked_s']:.3f} s blocked")
    assert buckets == 2  # fc3 .. fc1 first (3.3 MB), then the convolutions
    assert st["steps"] == rep["steps"]  # the ticket's and the round's, each data parallel
    assert st["buckets"] == buckets * st["steps"]
    assert st["bytes"] == sum(rep["sizes"]) * st["steps"]
    assert st["in_flight_s"] > 0 and st["blocked_s"] > 0


def test_a_parameter_without_a_gradient_does_not_hold_up_the_group(two):
    rep = two["unused"]
    _agrees(rep)
    assert rep["layout"] == [[2, 2], [2, 2]]


def test_evaluation_and_batchnorm_statistics_shared_by_the_processes_are_the_one_process_ones(two):
    # the average's test batches and batch-norm batches split over the processes, the particles'
    # over their data-parallel group: every figure is the one-process run's
    for case in ("shared_eval", "shared_eval_module"):
        rep = two[case]
        assert rep["layout"] == [[2, 1], [2, 1]], rep
        assert rep["masks"] == 1.0 and rep["diff"] == 0.0, rep  # bitwise
        assert rep["figures"] == rep["figures_alone"], rep


def test_shards_keep_the_whole_batchs_random_draws(two):
    # Config.augment, and a torch Dataset's transforms in worker processes: the shards get the
    # samples and draws the whole batch has, so the run follows the one-process run
    for case in ("augment", "torch_data"):
        print(f"\n{case}: masks {two[case]['masks']:.6f}, weights <= {two[case]['diff']:.3g}")
        _agrees(two[case])
        assert two[case]["diff"] <= 1e-3, two[case]


def test_your_module_with_dropout_trains_data_parallel(two):
    rep = two["module"]
    assert rep["layout"] == [[2, 2], [2, 2]]
    assert rep["acc"][-1] >= 0.85, rep


def test_a_batch_smaller_than_the_group_is_refused(two):
    assert "a batch of 1 samples cannot be split over the 2 processes" in two["refused"]


_GROUPS = r"""
lenet = dict(model="lenet_300_100", rounds=2, epochs=3, seed=5, data_parallel="always")
compare("swamp2", swamp_ext.Config(method="swamp", particles=2, **lenet), digits)
"""


@pytest.mark.parametrize("world,layout", [(4, [4, 2]), (3, [3, 1])])
def test_groups_of_processes_per_particle(tmp_path, world, layout):
    # 4 processes, 2 particles: two groups of two (torch.distributed subgroups); 3 processes,
    # 2 particles: one each, the third trains the ticket with them and sits the rounds out
    rep = _job(tmp_path, _GROUPS, world)["swamp2"]
    print(f"\nSWAMP-2 on {world} processes vs 1: masks {rep['masks']:.6f}, weights <= "
          f"{rep['diff']:.3g}")
    _agrees(rep)
    assert rep["layout"] == [layout] * 2


def test_the_auto_layout_rule_and_its_words():
    from swamp_ext.distributed import (
        DATA_PARALLEL_MIN_REUSE,
        data_parallel_choice,
        describe_layout,
        macs_per_parameter,
    )

    imp = dict(method="imp", batch_size=64)
    lenet = swamp_ext.Config(model="lenet_300_100", **imp)
    conv = swamp_ext.Config(model="conv4_small", **imp)
    # a linear layer does one multiply-add per weight and sample (biases aside)
    assert 0.95 < macs_per_parameter(lenet, (1, 28, 28), 10) <= 1.0
    # conv4_small on 28x28: each 3x3 weight is used at every output position
    assert macs_per_parameter(conv, (1, 28, 28), 10) > 10
    pays, why = data_parallel_choice(lenet, (1, 28, 28), 10, 2)
    assert not pays and "< 128" in why and 32 * 0.95 < float(why.split()[1]) <= 32
    pays, why = data_parallel_choice(conv, (1, 28, 28), 10, 2)
    assert pays and f">= {DATA_PARALLEL_MIN_REUSE:.0f}" in why
    # a group of 4 processes per particle: a quarter of the batch each
    assert not data_parallel_choice(swamp_ext.Config(model="conv4_small", method="imp",
                                                     batch_size=16), (1, 8, 8), 10, 4)[0]
    for layout, expect in (("always", True), ("never", False)):
        cfg = swamp_ext.Config(model="lenet_300_100", method="imp", data_parallel=layout)
        assert data_parallel_choice(cfg, (1, 28, 28), 10, 2) == \
            (expect, f"Config.data_parallel={layout}")
    # SWAMP-4 on 2 processes: only the ticket is a round of fewer particles (1) than processes
    assert "1 process per particle, 1 idle" in describe_layout(2, lenet, False)
    with pytest.raises(ValueError, match="data_parallel"):
        swamp_ext.Config(data_parallel="sometimes")


def test_results_json_records_the_layout_and_the_strict_reader_checks_it(tmp_path):
    out = tmp_path / "run"
    cfg = swamp_ext.Config(model="lenet_300_100", method="imp", rounds=1, epochs=1,
                           rewind_epochs=0)
    swamp_ext.run_imp(cfg, swamp_ext.datasets.load("digits"), progress=False,
                      checkpoint_dir=out)
    saved = json.loads((out / "results.json").read_text())
    assert saved["rounds"][0]["processes"] == 1
    assert saved["rounds"][0]["processes_per_particle"] == 1
    assert swamp_ext.load_run(out).rounds[0].processes == 1
    saved["rounds"][0]["processes_per_particle"] = 2  # more than the run had
    (out / "results.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="processes_per_particle"):
        swamp_ext.load_run(out)


def test_groups_inside_a_process_group_other_than_the_default_are_refused():
    # subgroups are made by torch.distributed.new_group, which every process of the default
    # group must call: with a smaller process_group the others would never join, so the run is
    # refused before any collective, naming why (reaching it for real takes 5+ processes)
    from swamp_ext.distributed import Group, data_parallel_subgroups

    lenet = dict(model="lenet_300_100", rounds=2)
    two_particles = swamp_ext.Config(method="swamp", particles=2, **lenet)
    with pytest.raises(ValueError, match="fewer particles than its 4 processes.*"
                                         "pass the default group"):
        data_parallel_subgroups(Group(name="part", rank=0, size=4, world=False), two_particles)
    # groups of one process, or of all of them, need no subgroups: nothing refused
    pair = Group(name="part", rank=0, size=2, world=False)
    assert data_parallel_subgroups(pair, two_particles) == []
    assert data_parallel_subgroups(pair, swamp_ext.Config(method="imp", **lenet)) == []
