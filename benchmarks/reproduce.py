"""The SWAMP paper's comparison at the scale this machine affords.

    python benchmarks/reproduce.py                      # every setting, seeds 0 1 2
    python benchmarks/reproduce.py --setting lenet_mnist5k --seeds 0 1 2 --out runs/reproduce

For each setting and seed: imp, imp_swa, swamp (4 particles), swamp_plus (4 particles after 2
single-particle rounds) and the random-pruning control (IMP with random positions at global
magnitude's layer densities); imp_ensemble(2) from pairs of IMP seeds (s, next seed). Then:
accuracy and ECE at ~50/80/90/95/98/99% sparsity (mean ± sd over seeds, difference to IMP),
the loss barrier between two SWAMP particles and between successive rounds (IMP and SWAMP), the
Hessian trace of IMP and SWAMP solutions, the accuracy picture, and a plain statement of what
agrees with the paper's claims, computed from these numbers.

Runs are kept in --out (one folder each): rerunning the command resumes or reuses them, so a
run that was stopped costs nothing twice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import swamp_ext
from swamp_ext import analysis, plots, report

SETTINGS = {
    # 22 rounds of 20%: 0 .. 99.1% sparsity
    "lenet_mnist5k": dict(model="lenet_300_100", dataset="mnist5k", epochs=5, rounds=22,
                          prune_ratio=0.2),
    "lenet_digits": dict(model="lenet_300_100", dataset="digits", epochs=10, rounds=22,
                         prune_ratio=0.2),
    # conv (the main job's setting): 3 epochs a round (rewind to 1, SWA over the last), half of
    # the remaining weights a round: 8 rounds, 0 .. 99.2%
    "conv4_mnist5k": dict(model="conv4_small", dataset="mnist5k", epochs=3, rounds=8,
                          prune_ratio=0.5, at=(0.5, 0.75, 0.875, 0.9375, 0.969, 0.984, 0.992),
                          # analyses of a conv net cost minutes each on 2 cores: fewer of them
                          analysed=(0.984,), points=6, hessian_samples=20, hessian_train=500),
}
METHODS = {
    "imp": dict(method="imp"),
    "imp_swa": dict(method="imp_swa"),
    "swamp": dict(method="swamp", particles=4),
    "swamp_plus": dict(method="swamp_plus", particles=4, single_particle_rounds=2),
    "random": dict(method="imp", pruning="random"),
}
AT = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
ANALYSED = (0.5, 0.9, 0.98)  # sparsities where barriers and Hessian traces are measured


def at_of(name: str) -> tuple:
    return SETTINGS[name].get("at", AT)


def run_all(name: str, seeds: list[int], out: str, methods: list[str]) -> dict[str, list]:
    s = {k: v for k, v in SETTINGS[name].items()
         if k not in ("at", "analysed", "points", "hessian_samples", "hessian_train")}
    data = swamp_ext.datasets.load(s["dataset"])
    runs: dict[str, list] = {}
    for seed in seeds:
        for m in methods:
            cfg = swamp_ext.Config(model=s["model"], epochs=s["epochs"], rounds=s["rounds"],
                                   prune_ratio=s["prune_ratio"], seed=seed, **METHODS[m])
            folder = os.path.join(out, name, m, f"seed{seed}")
            t0 = time.perf_counter()
            res = swamp_ext.run_imp(cfg, data, checkpoint_dir=folder, progress=False,
                                    keep_particles=m == "swamp")
            print(f"  {name} {m:<10} seed {seed}: {res.rounds[-1].test_acc:.4f} at "
                  f"{100 * res.rounds[-1].sparsity:.2f}% ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            runs.setdefault(m, []).append(swamp_ext.load_run(folder))
    if "imp" in runs and len(runs["imp"]) >= 2:
        imps = runs["imp"]
        for i, a in enumerate(imps):
            b = imps[(i + 1) % len(imps)]
            folder = os.path.join(out, name, "imp_ensemble", f"seed{a.config.seed}")
            runs.setdefault("imp_ensemble", []).append(
                analysis.imp_ensemble([a, b], data, folder))
    return runs


def nearest(res, s: float) -> int:
    return min(res.rounds, key=lambda r: abs(r.sparsity - s)).round


def mean_sd(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3g}"
    return f"{statistics.fmean(xs):.3g} ± {statistics.stdev(xs):.2g}"


def analyses(name: str, runs: dict[str, list]) -> tuple[list[str], dict]:
    """Barriers and Hessian traces at the ANALYSED sparsities, over seeds (Markdown rows)."""
    data = swamp_ext.datasets.load(SETTINGS[name]["dataset"])
    has_bn = SETTINGS[name]["model"].startswith("conv")
    points = SETTINGS[name].get("points", 11)
    most = SETTINGS[name].get("hessian_samples", 200)
    samples = SETTINGS[name].get("hessian_train", 1000)
    rows = ["| sparsity | particle barrier (SWAMP, test loss) | round-to-round barrier IMP | "
            "round-to-round barrier SWAMP | Hessian trace IMP | Hessian trace SWAMP |",
            "|---:|---:|---:|---:|---:|---:|"]
    found: dict = {}
    for s in SETTINGS[name].get("analysed", ANALYSED):
        vals: dict[str, list[float]] = {k: [] for k in ("part", "imp_r", "swamp_r", "h_imp",
                                                         "h_swamp")}
        for imp, sw in zip(runs["imp"], runs["swamp"]):
            k = nearest(sw, s)
            bn = (True,) if has_bn else (False,)  # without batch norm raw == recomputed
            kw = dict(bn=bn, train=False, points=points)
            vals["part"].append(analysis.barrier(sw, data, k, **kw)[0].test_loss_barrier)
            if k + 1 < len(sw.rounds):
                vals["imp_r"].append(analysis.barrier(imp, data, k, between="rounds", **kw)[0]
                                     .test_loss_barrier)
                vals["swamp_r"].append(analysis.barrier(sw, data, k, between="rounds", **kw)[0]
                                       .test_loss_barrier)
            for key, res in (("h_imp", imp), ("h_swamp", sw)):
                vals[key].append(analysis.hessian_trace(res, data, k, max_samples=most,
                                                        train_samples=samples).trace)
        found[s] = vals
        sp = 100 * runs["swamp"][0].rounds[nearest(runs["swamp"][0], s)].sparsity
        rows.append(f"| {sp:.1f}% | " + " | ".join(mean_sd(vals[k]) if vals[k] else "—"
                                                    for k in vals) + " |")
    return rows, found


def verdict(runs: dict[str, list], found: dict, at: tuple) -> list[str]:
    """What agrees with the paper's claims, from the numbers above."""
    groups = {g.method: g for g in report.group([r for rs in runs.values() for r in rs])}
    imp, sw = groups["imp"], groups["swamp"]
    out = []
    above = beyond = n = 0
    for s in at:
        m, sd, _ = sw.at(s)
        im, isd, _ = imp.at(s)
        if m is None or im is None:
            continue
        n += 1
        above += m > im
        beyond += m - im > (sd ** 2 + isd ** 2) ** 0.5 if sd is not None else 0
    out.append(f"- SWAMP above IMP (mean accuracy) at {above} of {n} sparsities, beyond the "
               f"seeds' spread at {beyond} (paper: SWAMP beats IMP, most at high sparsity).")
    if "imp_ensemble" in groups:
        ens = groups["imp_ensemble"]
        close = [s for s in at if sw.at(s)[0] is not None and ens.at(s)[0] is not None]
        gap = [100 * (sw.at(s)[0] - ens.at(s)[0]) for s in close]
        out.append("- SWAMP minus imp_ensemble(2), points: " + ", ".join(
            f"{100 * s:g}%: {g:+.2f}" for s, g in zip(close, gap)) +
            " (paper: SWAMP nears an ensemble of two IMP solutions at the inference cost of "
            "one model).")
    if "imp/random" in groups:
        r = groups["imp/random"]
        worst = max((100 * (imp.at(s)[0] - r.at(s)[0]) for s in at
                     if imp.at(s)[0] is not None and r.at(s)[0] is not None), default=0.0)
        out.append(f"- Random positions at the same layer densities lose up to {worst:.2f} "
                   "points to IMP (magnitude picks matter).")
    for s, v in found.items():
        part = statistics.fmean(v["part"])
        h_i, h_s = statistics.fmean(v["h_imp"]), statistics.fmean(v["h_swamp"])
        out.append(f"- At ~{100 * s:g}%: particle barrier {part:.3g} (paper: ~0, particles "
                   f"linearly connected); Hessian trace SWAMP/IMP = {h_s / h_i:.2f} (paper: "
                   f"< 1, flatter).")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", nargs="+", choices=sorted(SETTINGS), default=sorted(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--figure", default=None,
                   help="folder for the accuracy pictures (default: the --out folder)")
    p.add_argument("--no-analyses", action="store_true")
    args = p.parse_args()
    for name in args.setting:
        t0 = time.perf_counter()
        print(f"## {name}: {SETTINGS[name]}", flush=True)
        runs = run_all(name, args.seeds, args.out, args.methods)
        everything = [r for rs in runs.values() for r in rs]
        print()
        at = at_of(name)
        print(report.compare(everything, at, markdown=True))
        print()
        print(report.compare(everything, at, markdown=True, metric="ece"))
        found: dict = {}
        if not args.no_analyses and "imp" in runs and "swamp" in runs:
            rows, found = analyses(name, runs)
            print("\nbarriers (test loss above the line between the ends, BN recomputed "
                  "where the model has it) and Hessian traces (training loss, first "
                  f"{SETTINGS[name].get('hessian_train', 1000)} samples), mean ± sd over "
                  "seeds:\n")
            print("\n".join(rows))
        if "imp" in runs and "swamp" in runs:
            print("\n" + "\n".join(verdict(runs, found, at)))
        folder = args.figure or os.path.join(args.out, name)
        dirs = [r._run_dir for r in everything]
        png = plots.plot(dirs, os.path.join(folder, f"accuracy_{name}.png"))
        print(f"\npicture: {png}; {name} took {time.perf_counter() - t0:.0f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
