"""Cost of one dense SWAMP round against one IMP round, measured in one run: the issue's GPU goal
(wrn28_2 and resnet20 on 32x32 synthetic data: swamp round <= 1.5x imp round). Synthetic uint8
RGB images (random pixels, random labels: the cost of a round does not depend on what is learnt),
normalised and augmented (crop + flip) by the engine like CIFAR. Each round is timed best of
--repeats, interleaved; the ticket's epochs are included in both.

    python benchmarks/round_cost.py --device cuda                      # the GPU goal
    python benchmarks/round_cost.py --device cuda --modes stacked sequential
    python benchmarks/round_cost.py --models resnet20 --train 512 --epochs 2   # CPU smoke run
"""

from __future__ import annotations

import argparse
import time

import torch

import swamp_ext


def synthetic(n_train: int, n_test: int, seed: int = 0,
              size: int = 32) -> swamp_ext.datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return swamp_ext.datasets.from_arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                                          num_classes=10, name=f"synthetic{size}")


def round_seconds(cfg: swamp_ext.Config, data) -> float:
    t0 = time.perf_counter()
    swamp_ext.run_imp(cfg, data, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["wrn28_2", "resnet20"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", type=int, default=10000, help="synthetic training images")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--modes", nargs="+", default=["auto"],
                   help="particle_mode values for the swamp round "
                        "(auto, stacked, sequential, threads)")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    data = synthetic(a.train, 1000)
    print(f"{a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; synthetic "
          f"3x32x32, {a.train} training images, batch {a.batch}, {a.epochs} epochs, one dense "
          f"round (best of {a.repeats})")
    for m in a.models:
        base = dict(model=m, device=a.device, epochs=a.epochs, rounds=1, batch_size=a.batch,
                    seed=0)
        cfgs = {"imp": swamp_ext.Config(**base, method="imp")}
        for mode in a.modes:
            cfgs[f"swamp {mode}"] = swamp_ext.Config(**base, method="swamp",
                                                     particles=a.particles, particle_mode=mode)
        best = {k: float("inf") for k in cfgs}
        round_seconds(cfgs["imp"], data)  # warm-up (CUDA context, kernels, allocator)
        for _ in range(a.repeats):
            for k, cfg in cfgs.items():
                best[k] = min(best[k], round_seconds(cfg, data))
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in best.items())
        ratios = ", ".join(f"{k}/imp {best[k] / best['imp']:.2f}x" for k in best if k != "imp")
        print(f"{m:>10}: {parts} -> {ratios} (goal on GPU <= 1.5x)")


if __name__ == "__main__":
    main()
