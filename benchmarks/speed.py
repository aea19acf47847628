"""swamp_ext vs the plain-PyTorch reference (benchmarks/reference_torch.py), same data, model and
hyper-parameters, measured in one run:

  * one dense round: our swamp round / our imp round, and the reference's swamp round / ours;
  * a whole swamp run (default 16 rounds of 20%, to ~97% sparsity): reference seconds / ours, and
    the mean accuracy over rounds of each.

  * achieved training FLOP/s of one dense step (forward + backward FLOPs counted by
    torch.utils.flop_counter on the PyTorch mirror of the model) as a fraction of this machine's
    fp32 matmul FLOP/s (a 2048 x 2048 torch.mm, measured in the same run).

    cd benchmarks && python speed.py                   # lenet_300_100 on mnist5k
    cd benchmarks && python speed.py --model conv4 --epochs 1 --rounds 0
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from reference_torch import run as reference_run
from torch.utils.flop_counter import FlopCounterMode

import swamp_ext
from swamp_ext import _C
from swamp_ext.torch_models import build


def matmul_flops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * 2048**3 / best


def step_flops(model: str, shape, batch: int) -> float:
    net = build(model, shape, 10)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(net(x), y).backward()
    return fc.get_total_flops()


def ours(cfg, data):
    t0 = time.perf_counter()
    res = swamp_ext.run_imp(cfg, data, progress=False)
    return time.perf_counter() - t0, res.rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--rounds", dest="rounds", type=int, default=16,
                   help="rounds of the whole run (0: skip it)")
    p.add_argument("--repeats", type=int, default=3,
                   help="repeats of the short measurements (the fastest is reported)")
    p.add_argument("--only", choices=["all", "run", "overhead"], default="all",
                   help="run: the whole-run comparison only; overhead: the per-round cost "
                        "outside training only")
    a = p.parse_args()
    data = swamp_ext.datasets.load("mnist5k")
    if a.only == "overhead":
        round_overhead(a, data)
        return
    if a.only == "run":
        whole_run(a, data)
        round_overhead(a, data)
        return
    base = dict(model=a.model, epochs=a.epochs, particles=a.particles, seed=0)
    print(f"{a.model} on mnist5k, {a.particles} particles, {a.epochs} epochs/round, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # The machine is shared: our two-thread steps were seen to run 2x slower for tens of seconds
    # at a time (a core busy elsewhere; the mostly single-threaded Python reference suffers less).
    # Each short measurement is repeated, interleaved, and the fastest one is reported.
    flops = step_flops(a.model, data.input_shape, 128)
    shape = list(data.input_shape)
    auto = _C.models.particle_path(a.model, shape, 10, a.particles)
    lane_stacked = _C.models.lane_stack(a.model, shape, 10, a.particles) > 1
    # (label, particles, stacked, threads)
    variants = [("1 particle", 1, True, False),
                (f"{a.particles} particles stacked", a.particles, True, False),
                (f"{a.particles} particles sequential", a.particles, False, False),
                (f"{a.particles} particles threads", a.particles, lane_stacked, True)]
    peak, steps = 0.0, {v: float("inf") for v in variants}
    for _ in range(a.repeats):
        peak = max(peak, matmul_flops())
        for v in variants:
            steps[v] = min(steps[v], _C.models.train_step_seconds(
                a.model, shape, 10, batch_size=128, particles=v[1], stacked=v[2], threads=v[3],
                steps=10 if flops < 1e9 else 2, repeats=5 if flops < 1e9 else 1))
    print(f"fp32 matmul {peak / 1e9:.1f} GFLOP/s (2048^2 torch.mm); dense training step, "
          f"batch 128 (particle_mode auto trains {a.particles} particles: {auto}):")
    for v, s in steps.items():
        n = v[1]
        f = n * flops / s
        print(f"  {v[0]}: {n * flops / 1e6:.1f} MFLOP in {s * 1e3:.2f} ms = {f / 1e9:.1f} GFLOP/s "
              f"-> {100 * f / peak:.0f}% of matmul (goal >= 85%)")
    # one dense round (the ticket's epochs included in both)
    t_imp = t_sw = t_ref = float("inf")
    for _ in range(a.repeats):
        t_imp = min(t_imp, ours(swamp_ext.Config(**base, method="imp", rounds=1), data)[0])
        t_sw = min(t_sw, ours(swamp_ext.Config(**base, method="swamp", rounds=1), data)[0])
        t0 = time.perf_counter()
        reference_run(swamp_ext.Config(**base, method="swamp", rounds=1), data)
        t_ref = min(t_ref, time.perf_counter() - t0)
    print(f"dense round (best of {a.repeats}): ours imp {t_imp:.2f}s, ours swamp {t_sw:.2f}s, "
          f"reference swamp {t_ref:.2f}s -> swamp/imp {t_sw / t_imp:.2f}x, reference/ours "
          f"{t_ref / t_sw:.2f}x")

    if a.rounds == 0:
        return
    whole_run(a, data)
    round_overhead(a, data)


def whole_run(a, data) -> None:
    base = dict(model=a.model, epochs=a.epochs, particles=a.particles, seed=0)
    cfg = swamp_ext.Config(**base, method="swamp", rounds=a.rounds)
    t_ours, rounds = ours(cfg, data)
    t0 = time.perf_counter()
    ref = reference_run(cfg, data)
    t_r = time.perf_counter() - t0
    acc_ours = statistics.fmean(r.test_acc for r in rounds)
    acc_ref = statistics.fmean(r[1] for r in ref)
    print(f"whole run ({a.rounds} rounds, to {100 * rounds[-1].sparsity:.1f}% sparsity): ours "
          f"{t_ours:.1f}s, reference {t_r:.1f}s -> reference/ours {t_r / t_ours:.2f}x; mean "
          f"accuracy over rounds ours {100 * acc_ours:.2f}%, reference {100 * acc_ref:.2f}%")


def round_overhead(a, data) -> None:
    """What a round costs outside training: a SWAMP run whose training is one step per epoch
    (128 training images, batch 128), so that each round is almost only the work around it:
    the boundary's calls and callbacks, evaluation on 128 images, averaging, pruning, records."""
    tiny = swamp_ext.datasets.from_arrays(data.x_train[:128], data.y_train[:128],
                                          data.x_test[:128], data.y_test[:128],
                                          num_classes=data.num_classes, name="mnist5k[:128]")
    rounds = max(a.rounds, 16)
    cfg = swamp_ext.Config(model=a.model, method="swamp", particles=a.particles, rounds=rounds,
                           epochs=4, rewind_epochs=1, seed=0)
    best = float("inf")
    for _ in range(a.repeats):
        best = min(best, ours(cfg, tiny)[0])
    print(f"per-round cost outside training ({rounds} rounds of {a.particles} particles x 4 "
          f"one-step epochs, best of {a.repeats}): {1e3 * best / rounds:.1f} ms a round")


if __name__ == "__main__":
    main()
