"""A user's own torch.nn.Module against the zoo and against plain PyTorch, measured in one run.

For each model: the zoo model in the C++ core (``run_imp(config, data)``), its pure-PyTorch twin
handed over as a Python module (``run_imp(config, data, model=module)``, starting from the same
weights) along every particle path, and the plain-PyTorch reference loop
(benchmarks/reference_torch.py), each running the same SWAMP round(s) with 4 particles on mnist5k.
Prints seconds and the ratios module / zoo and reference / module, and whether the module run
found the zoo run's masks.

    python benchmarks/custom_model.py                          # lenet_300_100 and conv4_small
    python benchmarks/custom_model.py --models lenet_300_100 --epochs 4 --rounds 2
"""

from __future__ import annotations

import argparse
import time

import torch
from reference_torch import run as reference_run

import swamp_ext
from swamp_ext import models


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "conv4_small"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--paths", nargs="+", default=["auto", "sequential", "stacked", "threads"])
    a = p.parse_args()
    data = swamp_ext.datasets.load("mnist5k")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mnist5k, "
          f"{a.particles} particles, {a.rounds} round(s) of {a.epochs} epochs")
    for name in a.models:
        cfg = swamp_ext.Config(model=name, method="swamp", particles=a.particles,
                               rounds=a.rounds, epochs=a.epochs,
                               rewind_epochs=min(1, a.epochs - 1), lr=0.05,
                               single_particle_rounds=0)
        state, _ = models.create(name, data.input_shape, data.num_classes, seed=cfg.seed)
        module = models.to_torch(name, state, data.input_shape, data.num_classes)
        t_zoo, zoo = timed(lambda cfg=cfg: swamp_ext.run_imp(cfg, data))
        print(f"\n{name}: zoo (C++ model, path auto) {t_zoo:.2f}s, acc "
              f"{[round(r.test_acc, 4) for r in zoo.rounds]}")
        best = None
        for path in a.paths:
            c = swamp_ext.Config.from_dict({**cfg.to_dict(), "particle_mode": path})
            t, r = timed(lambda c=c, m=module: swamp_ext.run_imp(c, data, model=m))
            same = all(torch.equal(zoo.masks[k], r.masks[k]) for k in zoo.masks)
            dacc = max(abs(x.test_acc - y.test_acc) for x, y in zip(zoo.rounds, r.rounds))
            print(f"  module, path {path:10s} {t:7.2f}s  module/zoo {t / t_zoo:5.2f}x  "
                  f"masks equal {same}  max |acc diff| {dacc:.4f}")
            if path == "auto":
                best = t
        t_ref, ref = timed(lambda cfg=cfg: reference_run(cfg, data))
        print(f"  plain-PyTorch reference  {t_ref:7.2f}s  reference/module(auto) "
              f"{t_ref / best if best else float('nan'):5.2f}x  acc "
              f"{[round(x[1], 4) for x in ref]}")


if __name__ == "__main__":
    main()
