"""Training-step time against sparsity: the dense masked step vs our sparse kernels (linear layers:
sparse x dense products; convolutions: direct sparse convolution over padded planes), one
particle, measured in one run. The step is forward, backward and masked SGD (momentum 0.9,
weight decay 5e-4).

    python benchmarks/sparse_step.py                       # lenet_300_100, global masks
    python benchmarks/sparse_step.py --conv                # conv4_small, resnet20, vgg11
    python benchmarks/sparse_step.py --model lenet5 --shape 1 28 28 --particles 4

Masks: "global" prunes at initialisation by one magnitude threshold over all layers (the
method's rule; at initialisation it strips the large linear layers first, so convolutions stay
dense far longer than after training), "layerwise" prunes every layer to the same sparsity (what
the convolution kernels see at that sparsity). Columns: dense masked step, sparse step (every
pruned layer on sparse kernels), the engine's auto choice (linear layers at density <= 0.5,
convolutions at <= sparse_conv_density 0.1), and sparse / dense. Goals at 95% sparsity:
lenet_300_100 sparse <= 0.3x dense, conv4_small <= 0.5x.
"""

from __future__ import annotations

import argparse

import torch

from swamp_ext import _C

_CONV = [("conv4_small", [3, 32, 32]), ("resnet20", [3, 32, 32]), ("vgg11", [3, 32, 32])]


def table(model, shape, a, prune, goal):
    print(f"\n{model} {tuple(shape)}, batch {a.batch}, {a.particles} particle(s), {prune} masks, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of "
          f"{a.repeats} x {a.steps} steps")
    print(f"{'sparsity':>8} {'dense ms':>9} {'sparse ms':>10} {'auto ms':>8} {'sparse/dense':>13}")

    def t(sp, kernels):
        return _C.models.train_step_seconds(model, shape, 10, batch_size=a.batch,
                                            particles=a.particles, stacked=False, sparsity=sp,
                                            sparse_kernels=kernels, steps=a.steps,
                                            repeats=a.repeats, prune=prune) * 1e3

    for sp in [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99]:
        d, s, au = t(sp, "off"), t(sp, "on"), t(sp, "auto")
        flag = (f"  goal <= {goal:.2f}: " + ("met" if s / d <= goal else "NOT met")) \
            if sp == 0.95 and goal else ""
        print(f"{100 * sp:7.0f}% {d:9.3f} {s:10.3f} {au:8.3f} {s / d:12.2f}x{flag}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--shape", type=int, nargs="+", default=[1, 28, 28])
    p.add_argument("--conv", action="store_true", help="the conv models, layerwise masks")
    p.add_argument("--prune", choices=("global", "layerwise"), default=None)
    p.add_argument("--batch", type=int, default=None, help="default 128 (64 with --conv)")
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="default 30 (5 with --conv)")
    p.add_argument("--repeats", type=int, default=None, help="default 7 (3 with --conv)")
    a = p.parse_args()
    a.batch = a.batch or (64 if a.conv else 128)
    a.steps = a.steps or (5 if a.conv else 30)
    a.repeats = a.repeats or (3 if a.conv else 7)
    if a.conv:
        for model, shape in _CONV:
            table(model, shape, a, a.prune or "layerwise", 0.5 if model == "conv4_small" else 0)
    else:
        table(a.model, a.shape, a, a.prune or "global", 0.3 if a.model == "lenet_300_100" else 0)


if __name__ == "__main__":
    main()
