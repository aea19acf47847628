"""What a SWAMP round costs beyond its particles: the same SWAMP-N run with the per-particle
diagnostics (each particle's batch-norm recompute and evaluation, the prediction ensemble) on
and off (Config.diagnostics), against an IMP run of the same schedule, in one process. Mean
seconds of the rounds after the first (RoundRecord.seconds: training and everything after it).

    python benchmarks/diagnostics.py                        # conv4_small on mnist5k, SWAMP-4
    python benchmarks/diagnostics.py --model lenet_300_100 --epochs 4

Reads: off/on (what switching them off saves) and off / (N x IMP) (a SWAMP-N round without the
diagnostics against N IMP rounds: N trainings + N evaluations; <= 1 means the particles are all a
SWAMP round costs beyond IMP).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu import machine  # noqa: E402

import swamp_ext  # noqa: E402


def round_seconds(cfg: swamp_ext.Config, data) -> tuple[float, swamp_ext.Result]:
    res = swamp_ext.run_imp(cfg, data, progress=False)
    return statistics.fmean(r.seconds for r in res.rounds[1:]), res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="conv4_small")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    data = swamp_ext.datasets.load(a.dataset)
    base = dict(model=a.model, device=a.device, epochs=a.epochs, rounds=a.rounds,
                prune_ratio=0.5, seed=0)
    n = a.particles
    print(f"{a.model} on {a.dataset}, {a.epochs} epochs/round, {a.rounds} rounds (mean of rounds "
          f"1..{a.rounds - 1}); {machine(a.device)}")
    imp, _ = round_seconds(swamp_ext.Config(**base, method="imp"), data)
    on, r_on = round_seconds(swamp_ext.Config(**base, method="swamp", particles=n), data)
    off, r_off = round_seconds(swamp_ext.Config(**base, method="swamp", particles=n,
                                                diagnostics=False), data)
    same = all(torch.equal(r_off.masks[k], m) for k, m in r_on.masks.items()) and \
        [r.test_acc for r in r_on.rounds] == [r.test_acc for r in r_off.rounds]
    print(f"{'run':<28}{'round s':>9}{'x IMP':>8}")
    print(f"{'imp':<28}{imp:9.2f}{1.0:8.2f}")
    print(f"{f'swamp-{n}, diagnostics on':<28}{on:9.2f}{on / imp:8.2f}")
    print(f"{f'swamp-{n}, diagnostics off':<28}{off:9.2f}{off / imp:8.2f}")
    print(f"diagnostics off / on: {off / on:.2f}x (saves {100 * (1 - off / on):.0f}% of a round); "
          f"off / ({n} x imp): {off / (n * imp):.2f}; masks and accuracies equal: {same}")


if __name__ == "__main__":
    main()
