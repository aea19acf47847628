"""Training-step time against sparsity: the dense masked step vs our sparse linear kernels, on
LeNet-300-100 (batch 128, one particle, masks from one-shot global magnitude pruning), measured
in one run. The step is forward, backward and masked SGD (momentum 0.9, weight decay 5e-4).

    python benchmarks/sparse_step.py
    python benchmarks/sparse_step.py --model lenet5 --shape 1 28 28 --particles 4

Columns: dense masked step, sparse step (every pruned linear layer on sparse kernels), the
engine's auto choice (layers at density <= 0.5 sparse), and sparse / dense. Goal at 95% sparsity:
sparse <= 0.3x dense.
"""

from __future__ import annotations

import argparse

import torch

from swamp_ext import _C


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--shape", type=int, nargs="+", default=[1, 28, 28])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    print(f"{a.model}, batch {a.batch}, {a.particles} particle(s), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {a.repeats} x {a.steps} steps")
    print(f"{'sparsity':>8} {'dense ms':>9} {'sparse ms':>10} {'auto ms':>8} {'sparse/dense':>13}")

    def t(sp, kernels):
        return _C.models.train_step_seconds(a.model, a.shape, 10, batch_size=a.batch,
                                            particles=a.particles, stacked=False, sparsity=sp,
                                            sparse_kernels=kernels, steps=a.steps,
                                            repeats=a.repeats) * 1e3

    for sp in [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99]:
        d, s, au = t(sp, "off"), t(sp, "on"), t(sp, "auto")
        flag = ("  goal <= 0.30: " + ("met" if s / d <= 0.3 else "NOT met")) if sp == 0.95 else ""
        print(f"{100 * sp:7.0f}% {d:9.3f} {s:10.3f} {au:8.3f} {s / d:12.2f}x{flag}")


if __name__ == "__main__":
    main()
