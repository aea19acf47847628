"""Accuracy at 2:4 (issue 41, part 2): SWAMP's and IMP's N:M runs against the one-shot recipe
users know from NVIDIA's ASP (train dense, prune the trained weights to 2:4 by magnitude,
retrain once on the same schedule), on conv4_small / mnist5k over several seeds, in one run.

    python benchmarks/nm.py                       # 3 seeds, 3 epochs a round, SWAMP-4
    python benchmarks/nm.py --seeds 0 --epochs 2  # a quicker look

Every method starts from the same θ0 per seed and trains the same epochs per round. IMP and
SWAMP: Config(pruning="2:4", rounds=3): dense, then 3:4, then 2:4, each round rewound to the
ticket; the figure is the last round's. One-shot: the dense model of IMP's round 0 (the same
training), pruned to 2:4 by magnitude, then trained once more with the pattern held (plain
PyTorch, benchmarks/reference_torch.py). Layers whose rows are not whole groups of 4 stay dense in
every method (conv4_small's first convolution: 9 weights a row).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import swamp_ext
from swamp_ext import Config, ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_torch  # noqa: E402
from gpu import machine  # noqa: E402


def one_shot(imp: swamp_ext.Result, cfg: Config, data, seed: int) -> float:
    model = imp.round(0).to_torch().train()
    names = [n for n in imp.masks]
    params = dict(model.named_parameters())
    ws = [params[n].detach() for n in names]
    masks = dict(zip(names, ops.nm_prune(ws, None, 2, 4)))
    with torch.no_grad():
        for n, m in masks.items():
            params[n].mul_(m)
    trained = reference_torch.train(model, masks, data, cfg, 0, seed, swa=False)
    for n, m in masks.items():  # the pattern held through the retraining
        assert not bool((dict(trained.named_parameters())[n].detach()[~m] != 0).any())
    return reference_torch.accuracy(trained, data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="conv4_small")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.05)
    a = p.parse_args()
    data = swamp_ext.datasets.load("mnist5k")
    print(f"# 2:4 masks, {a.model} / mnist5k, {a.epochs} epochs a round, {machine('cpu')}")
    rows: dict[str, list[float]] = {"dense (round 0)": [], "one-shot 2:4 (ASP recipe)": [],
                                    "IMP 2:4": [], f"SWAMP-{a.particles} 2:4": []}
    t0 = time.perf_counter()
    for seed in a.seeds:
        base = dict(model=a.model, pruning="2:4", rounds=3, epochs=a.epochs, lr=a.lr, seed=seed)
        imp = swamp_ext.run_imp(Config(**base, method="imp"), data, progress=False)
        swamp = swamp_ext.run_imp(Config(**base, method="swamp", particles=a.particles), data,
                                  progress=False)
        plain = Config(**dict(base, pruning="global"), method="imp")
        shot = one_shot(imp, plain, data, seed)
        rows["dense (round 0)"].append(imp.rounds[0].test_acc)
        rows["one-shot 2:4 (ASP recipe)"].append(shot)
        rows["IMP 2:4"].append(imp.rounds[-1].test_acc)
        rows[f"SWAMP-{a.particles} 2:4"].append(swamp.rounds[-1].test_acc)
        assert abs(imp.rounds[-1].sparsity - swamp.rounds[-1].sparsity) < 1e-9
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rows.items())
              + f"; sparsity {imp.rounds[-1].sparsity:.4f} (dense layers: "
              + f"{', '.join(imp.dense_layers) or 'none'})", flush=True)
    print(f"\n{'method':<28}{'test accuracy (mean ± sd over seeds)':>40}")
    for k, v in rows.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{k:<28}{100 * statistics.mean(v):>30.2f}% ± {100 * sd:.2f}")
    print(f"({len(a.seeds)} seeds, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
