"""Particles trained stacked (one model holding N particles: batched-matmul linear layers,
grouped convolutions, batch norm over N*C channels) vs one model after the other: seconds per
training step of all N particles, measured in one run. The engine's particle_mode="auto" follows
this measurement (sequential on the CPU, stacked on a GPU).

    python benchmarks/stacked_step.py
    python benchmarks/stacked_step.py --device cuda --models wrn28_2 resnet20 --shape 3 32 32
"""

from __future__ import annotations

import argparse

import torch

from swamp_ext import _C


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "conv4_small", "conv4"])
    p.add_argument("--shape", type=int, nargs="+", default=[1, 28, 28])
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"{a.particles} particles, batch {a.batch}, {a.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for m in a.models:
        t = {s: _C.models.train_step_seconds(m, a.shape, 10, batch_size=a.batch,
                                             particles=a.particles, stacked=s, steps=a.steps,
                                             repeats=a.repeats, device=a.device)
             for s in (False, True)}
        print(f"{m:>16}: sequential {t[False] * 1e3:9.2f} ms, stacked {t[True] * 1e3:9.2f} ms "
              f"-> sequential/stacked {t[False] / t[True]:.2f}x")


if __name__ == "__main__":
    main()
