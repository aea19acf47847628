"""SWAMP vs IMP vs IMP+SWA on the built-in mnist5k: mean +- std test accuracy per sparsity.

    python benchmarks/swamp_vs_imp.py                          # lenet_300_100, 3 seeds, 22 rounds
    python benchmarks/swamp_vs_imp.py --model conv4 --epochs 4 --seeds 0,1,2
    python benchmarks/swamp_vs_imp.py --report runs.json   # the table of a saved (partial) run

22 rounds of 20% reach 1 - 0.8**21 = 99.1% sparsity. Every method of a seed starts from the same
initialisation; each round trains from the rewind point (epoch 1) to --epochs. The table also gives
the prediction ensemble of SWAMP's particles (same training cost, N times the inference cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import swamp_ext

METHODS = ("imp", "imp_swa", "swamp")


def fmt(values: list[float]) -> str:
    m = 100 * statistics.fmean(values)
    s = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:6.2f} ± {s:4.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=22)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--swa-lr", type=float, default=0.05)
    p.add_argument("--swa-start", type=float, default=0.75)
    p.add_argument("--prune-ratio", type=float, default=0.2)
    p.add_argument("--json", help="also write all round records here (after every run)")
    p.add_argument("--report", help="print the table of records saved by --json, and stop")
    a = p.parse_args()
    if a.report:
        with open(a.report) as f:
            saved = json.load(f)
        report(saved["args"], saved["records"])
        return
    seeds = [int(s) for s in a.seeds.split(",")]
    data = swamp_ext.datasets.load(a.dataset)
    seconds = {m: 0.0 for m in METHODS}
    records = []
    for seed in seeds:
        for method in METHODS:
            cfg = swamp_ext.Config(model=a.model, method=method, particles=a.particles,
                                   rounds=a.rounds, epochs=a.epochs, rewind_epochs=1,
                                   prune_ratio=a.prune_ratio, batch_size=128, lr=a.lr,
                                   momentum=0.9, weight_decay=5e-4, swa_start=a.swa_start,
                                   swa_lr=a.swa_lr, seed=seed)
            t0 = time.perf_counter()
            res = swamp_ext.run_imp(cfg, data, progress=False)
            seconds[method] += time.perf_counter() - t0
            records.append({"seed": seed, "method": method,
                            "rounds": [vars(r) for r in res.rounds]})
            print(f"  seed {seed} {method:8s} done in {time.perf_counter() - t0:6.1f}s", flush=True)
            if a.json:  # partial results survive an interrupted benchmark
                with open(a.json, "w") as f:
                    json.dump({"args": vars(a), "records": records}, f, indent=1)

    report(vars(a), records, seconds)


def report(args: dict, records: list[dict], seconds: dict | None = None) -> None:
    """Prints the comparison from round records (complete seeds only)."""
    by = {(r["seed"], r["method"]): r["rounds"] for r in records}
    seeds = sorted({s for s, _ in by if all((s, m) in by for m in METHODS)})
    if not seeds:
        print("no seed has all three methods yet")
        return
    acc = {m: [[x["test_acc"] for x in by[(s, m)]] for s in seeds] for m in METHODS}
    ens = [[x["ensemble_acc"] for x in by[(s, "swamp")]] for s in seeds]
    sparsity = [x["sparsity"] for x in by[(seeds[0], "imp")]]
    print(f"\n{args['model']} on {args['dataset']}: test accuracy (%) mean ± std over seeds "
          f"{seeds}; {args['epochs']} epochs/round, {args['particles']} particles")
    head = f"{'sparsity':>9} | " + " | ".join(f"{m:^13}" for m in METHODS)
    print(head + f" | {'swamp-imp':>9} | {'swamp ens':^13}")
    print("-" * len(head) + "-" * 30)
    for r, sp in enumerate(sparsity):
        cols = [fmt([acc[m][s][r] for s in range(len(seeds))]) for m in METHODS]
        diff = statistics.fmean(acc["swamp"][s][r] - acc["imp"][s][r] for s in range(len(seeds)))
        e = fmt([ens[s][r] for s in range(len(seeds))])
        print(f"{100 * sp:8.2f}% | " + " | ".join(cols) + f" | {100 * diff:+9.2f} | {e}")
    wins = sum(
        statistics.fmean(acc["swamp"][s][r] for s in range(len(seeds)))
        >= statistics.fmean(acc["imp"][s][r] for s in range(len(seeds)))
        for r in range(len(sparsity)))
    line = f"\nswamp >= imp (mean) at {wins} of {len(sparsity)} sparsities"
    if seconds:
        line += ("; wall seconds: " + ", ".join(f"{m} {seconds[m]:.0f}" for m in METHODS)
                 + f" (swamp/imp cost ratio {seconds['swamp'] / seconds['imp']:.1f}x)")
    print(line)


if __name__ == "__main__":
    main()
