"""swamp_ext vs the plain-PyTorch reference (benchmarks/reference_torch.py), same data, model and
hyper-parameters, measured in one run:

  * one dense round: our swamp round / our imp round, and the reference's swamp round / ours;
  * a whole swamp run (default 16 rounds of 20%, to ~97% sparsity): reference seconds / ours, and
    the mean accuracy over rounds of each.

    python benchmarks/speed.py                          # lenet_300_100 on mnist5k
    python benchmarks/speed.py --model conv4_small --rounds 3 --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from reference_torch import run as reference_run

import swamp_ext


def ours(cfg, data):
    t0 = time.perf_counter()
    res = swamp_ext.run_imp(cfg, data, progress=False)
    return time.perf_counter() - t0, res.rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--particles", type=int, default=4)
    a = p.parse_args()
    data = swamp_ext.datasets.load("mnist5k")
    base = dict(model=a.model, epochs=a.epochs, particles=a.particles, seed=0)
    print(f"{a.model} on mnist5k, {a.particles} particles, {a.epochs} epochs/round, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    # one dense round (the ticket's epochs included in both)
    t_imp, _ = ours(swamp_ext.Config(**base, method="imp", rounds=1), data)
    t_sw, _ = ours(swamp_ext.Config(**base, method="swamp", rounds=1), data)
    t0 = time.perf_counter()
    reference_run(swamp_ext.Config(**base, method="swamp", rounds=1), data)
    t_ref = time.perf_counter() - t0
    print(f"dense round: ours imp {t_imp:.2f}s, ours swamp {t_sw:.2f}s, reference swamp "
          f"{t_ref:.2f}s -> swamp/imp {t_sw / t_imp:.2f}x, reference/ours {t_ref / t_sw:.2f}x")

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


if __name__ == "__main__":
    main()
