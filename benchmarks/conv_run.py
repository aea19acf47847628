"""A whole SWAMP run of a conv net to >= 98% sparsity: swamp_ext against the plain-PyTorch reference
loop (benchmarks/reference_torch.py) at equal epochs, same data, model and hyper-parameters,
measured in one run; and each of our SWAMP rounds against one dense plain-PyTorch IMP round.

    python benchmarks/conv_run.py                      # conv4_small, mnist5k, 19 rounds (98.2%)
    python benchmarks/conv_run.py --epochs 3 --dense   # also ours with the sparse kernels off
    python benchmarks/conv_run.py --layer-densities    # only: where global pruning leaves the
                                                       # layers (an IMP run, same schedule)

Goals (issue 18): the whole run >= 2x faster than the reference at equal accuracy; from 90%
sparsity on, one SWAMP-4 round of ours <= one dense plain-PyTorch IMP round. Round seconds are
each loop's own: ours includes evaluating every particle and the ensemble, the reference only the
average. Both include the batch-norm recompute and pruning; neither the ticket's epochs.
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
    return (time.perf_counter() - t0, [(r.sparsity, r.test_acc, r.seconds) for r in res.rounds],
            res.rounds[-1].layer_density)


def reference(cfg, data):
    t0 = time.perf_counter()
    rounds = reference_run(cfg, data)
    return time.perf_counter() - t0, rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="conv4_small")
    p.add_argument("--epochs", type=int, default=2,
                   help="of the schedule; a round trains the epochs after the 1 rewind epoch")
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--rounds", type=int, default=19, help="19 rounds of 20%%: 98.2%% sparsity")
    p.add_argument("--dense", action="store_true",
                   help="also our run with sparse_kernels='off' (the dense masked step)")
    p.add_argument("--layer-densities", action="store_true",
                   help="only an IMP run of the same schedule: its last round's layer densities")
    a = p.parse_args()
    data = swamp_ext.datasets.load("mnist5k")
    base = dict(model=a.model, epochs=a.epochs, particles=a.particles, seed=0)
    if a.layer_densities:
        last = ours(swamp_ext.Config(**base, method="imp", rounds=a.rounds), data)[1:]
        print(f"{a.model}, imp, {a.rounds} rounds: {100 * last[0][-1][0]:.1f}% sparsity; layer "
              "densities " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in last[1].items()))
        return
    print(f"{a.model} on mnist5k, swamp with {a.particles} particles, {a.epochs} epoch(s)/round, "
          f"{a.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads")

    cfg = swamp_ext.Config(**base, method="swamp", rounds=a.rounds)
    runs = {"ours": ours(cfg, data)}
    if a.dense:
        runs["ours dense"] = ours(swamp_ext.Config(**base, method="swamp", rounds=a.rounds,
                                                   sparse_kernels="off"), data)
    runs["reference"] = reference(cfg, data)
    imp_round = reference(swamp_ext.Config(**base, method="imp", rounds=1), data)[1][0][2]

    names = list(runs)
    head = "".join(f" {n + ' s':>13} {n + ' acc':>15}" for n in names)
    print(f"\n{'round':>5} {'sparsity':>8}{head} {'ours/ref imp round':>19}")
    ours_rounds = runs["ours"][1]
    for r, row in enumerate(ours_rounds):
        cells = "".join(f" {runs[n][1][r][2]:13.2f} {100 * runs[n][1][r][1]:14.2f}%" for n in names)
        print(f"{r:5d} {100 * row[0]:7.1f}%{cells} {row[2] / imp_round:18.2f}x")

    t_ours, t_ref = runs["ours"][0], runs["reference"][0]
    acc = {n: statistics.fmean(x[1] for x in runs[n][1]) for n in names}
    last = {n: runs[n][1][-1][1] for n in names}
    print("\nwhole run: " + ", ".join(f"{n} {runs[n][0]:.1f}s" for n in names)
          + f" -> reference/ours {t_ref / t_ours:.2f}x (goal >= 2x)")
    if a.dense:
        print(f"sparse kernels: ours dense/ours {runs['ours dense'][0] / t_ours:.2f}x")
    print("mean accuracy over rounds: " + ", ".join(f"{n} {100 * acc[n]:.2f}%" for n in names)
          + "; last round: " + ", ".join(f"{n} {100 * last[n]:.2f}%" for n in names))
    dens = ", ".join(f"{k} {100 * v:.1f}%" for k, v in runs["ours"][2].items())
    print(f"our last round's layer densities: {dens}")
    late = [row[2] for row in ours_rounds if row[0] >= 0.9]
    if late:
        print(f"one dense reference IMP round {imp_round:.2f}s; our SWAMP-{a.particles} rounds at "
              f">= 90% sparsity: {min(late) / imp_round:.2f}-{max(late) / imp_round:.2f}x of it "
              f"(goal <= 1x)")


if __name__ == "__main__":
    main()
