"""The three ways the particles of a round train, measured in one run as seconds per training step
of all N particles:

  * sequential: one model after the other, each step using every intra-op thread;
  * stacked: one model holding N particles (batched-matmul linear layers, grouped convolutions,
    batch norm over N*C channels);
  * threads (CPU): side by side, one thread per lane, in lock step; each lane's particles in one
    stacked model for models made of linear layers only, one model per particle otherwise.

The engine's particle_mode="auto" follows this measurement (see particle_path in
swamp/engine.h): on the CPU threads where the particles spread evenly over the threads, otherwise
stacked for models made of linear layers only and sequential for models with convolutions;
stacked on a GPU. The auto column names the path auto picks here.

    python benchmarks/stacked_step.py
    python benchmarks/stacked_step.py --models lenet_300_100 --sparsity 0.8 0.95
    python benchmarks/stacked_step.py --device cuda --models wrn28_2 resnet20 --shape 3 32 32
"""

from __future__ import annotations

import argparse

import torch

from swamp_ext import _C

PATHS = {"sequential": (False, False), "stacked": (True, False), "threads": (False, True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5", "conv4_small"])
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
    paths = [k for k in PATHS if a.device == "cpu" or k != "threads"]
    for m in a.models:
        auto = _C.models.particle_path(m, a.shape, 10, a.particles, device=a.device)
        for sp in a.sparsity:
            # the threads path stacks each lane's particles for linear-only models (lane_stack)
            lane_stacked = _C.models.lane_stack(m, a.shape, 10, a.particles) > 1
            t = {k: float("inf") for k in paths}
            for _ in range(a.repeats):  # interleaved: the machine is shared and noisy
                for k in paths:
                    stacked, threads = PATHS[k]
                    stacked = stacked or (threads and lane_stacked)
                    t[k] = min(t[k], _C.models.train_step_seconds(
                        m, a.shape, 10, batch_size=a.batch, particles=a.particles,
                        stacked=stacked, threads=threads, sparsity=sp,
                        sparse_kernels="auto" if a.device == "cpu" else "off", steps=a.steps,
                        repeats=1, device=a.device))
            cols = ", ".join(f"{k} {t[k] * 1e3:8.2f} ms" for k in paths)
            ratios = ", ".join(f"{k} {t[k] / t['sequential']:.2f}x" for k in paths
                               if k != "sequential")
            print(f"{m:>14} {100 * sp:3.0f}% sparse: {cols} | vs sequential: {ratios} | "
                  f"auto: {auto}")


if __name__ == "__main__":
    main()
