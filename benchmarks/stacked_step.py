"""Particles trained stacked (one model holding N particles: batched-matmul linear layers,
grouped convolutions, batch norm over N*C channels) vs one model after the other: seconds per
training step of all N particles, measured in one run. The engine's particle_mode="auto" follows
this measurement: on the CPU stacked for models made of linear layers only, sequential for models
with convolutions; stacked on a GPU.

    python benchmarks/stacked_step.py
    python benchmarks/stacked_step.py --models lenet_300_100 --sparsity 0.8 0.95
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
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.0],
                   help="global magnitude sparsity of the masks; pruned linear layers use the "
                        "sparse kernels where the engine's auto rule would (CPU)")
    a = p.parse_args()
    print(f"{a.particles} particles, batch {a.batch}, {a.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for m in a.models:
        for sp in a.sparsity:
            t = {s: _C.models.train_step_seconds(
                m, a.shape, 10, batch_size=a.batch, particles=a.particles, stacked=s, sparsity=sp,
                sparse_kernels="auto" if a.device == "cpu" else "off", steps=a.steps,
                repeats=a.repeats, device=a.device) for s in (False, True)}
            print(f"{m:>16} {100 * sp:4.0f}% sparse: sequential {t[False] * 1e3:9.2f} ms, stacked "
                  f"{t[True] * 1e3:9.2f} ms -> sequential/stacked {t[False] / t[True]:.2f}x")


if __name__ == "__main__":
    main()
