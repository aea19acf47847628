"""Sparse inference on the CPU (issue 41): a pruned zoo model as swamp_ext hands it back,
``to_torch(sparse="auto")``, against the dense module and against torch's own CSR
(``Tensor.to_sparse_csr`` + ``torch.sparse.addmm``; convolutions through ``F.unfold``), at the
same threads, in one run.

    python benchmarks/inference.py                 # the issue's table
    python benchmarks/inference.py --quick         # small repeats, a smoke run
    python benchmarks/inference.py --models lenet_300_100 --sparsities 0.98 --batches 1 64

The masks are one-shot global magnitude pruning, to each sparsity, of the dense model trained
for --epochs (mnist5k; resnet20 on synthetic 32x32 images, CIFAR-10 being offline) or, with
--weights init, of its initial weights θ0: latency depends on where the zeros are, and global
magnitude spreads them over the layers as IMP does (the big layers empty first). Latency: the median
of interleaved timings (each a loop of calls long enough to read, under torch.inference_mode),
ms per batch. Bytes: the state dict as saved (values + int32 indices for sparse layers).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import swamp_ext
from swamp_ext.inference import choices, sparsify, state_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import machine  # noqa: E402

SHAPES = {"lenet_300_100": (1, 28, 28), "conv4_small": (1, 28, 28), "resnet20": (3, 32, 32)}
PLAN = [("lenet_300_100", (0.9, 0.98, 0.992)), ("conv4_small", (0.9, 0.98)),
        ("resnet20", (0.9, 0.98))]


class TorchCsrLinear(nn.Module):
    """y = x W^T + b with W a torch CSR tensor (torch.sparse.addmm on [out, B])."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.w = lin.weight.detach().to_sparse_csr()
        self.b = None if lin.bias is None else lin.bias.detach().unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.t()
        if self.b is None:
            return torch.sparse.mm(self.w, xt).t()
        return torch.sparse.addmm(self.b, self.w, xt).t()


class TorchCsrConv(nn.Module):
    """conv2d as torch CSR [out, in*k*k] times the unfolded input (im2col)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        w = conv.weight.detach()
        self.w = w.reshape(w.shape[0], -1).to_sparse_csr()
        self.k, self.s, self.p = conv.kernel_size, conv.stride, conv.padding
        self.b = None if conv.bias is None else conv.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        oh = (H + 2 * self.p[0] - self.k[0]) // self.s[0] + 1
        ow = (W + 2 * self.p[1] - self.k[1]) // self.s[1] + 1
        cols = F.unfold(x, self.k, padding=self.p, stride=self.s)  # [B, in*k*k, L]
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [in*k*k, B*L]
        y = torch.sparse.mm(self.w, cols).reshape(-1, B, oh * ow).transpose(0, 1)
        y = y.reshape(B, -1, oh, ow)
        return y if self.b is None else y + self.b.view(1, -1, 1, 1)


def torch_csr(module: nn.Module) -> nn.Module:
    import copy

    out = copy.deepcopy(module)
    for name, m in list(out.named_modules()):
        new = None
        if type(m) is nn.Linear and bool((m.weight == 0).any()):
            new = TorchCsrLinear(m)
        elif type(m) is nn.Conv2d and m.groups == 1 and bool((m.weight == 0).any()):
            new = TorchCsrConv(m)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, attr, new)
    return out


@functools.cache
def trained_state(name: str, epochs: int) -> dict[str, torch.Tensor]:
    """The dense model after `epochs` of training (an IMP run's round 0): on mnist5k for the
    28x28 models, on synthetic 32x32 images for resnet20 (no CIFAR-10 offline)."""
    if SHAPES[name] == (1, 28, 28):
        data = swamp_ext.datasets.load("mnist5k")
    else:
        from round_cost import synthetic

        data = synthetic(2000, 200)
    cfg = swamp_ext.Config(model=name, method="imp", rounds=1, epochs=epochs, rewind_epochs=0,
                           seed=0)
    return swamp_ext.run_imp(cfg, data, progress=False).state_dict()


def pruned_model(name: str, sparsity: float, weights: str, epochs: int
                 ) -> tuple[nn.Module, dict[str, float]]:
    shape = SHAPES[name]
    state, prunable = swamp_ext.models.create(name, shape, 10, seed=0)
    if weights == "trained":
        state = dict(trained_state(name, epochs))
    masks = swamp_ext.ops.global_magnitude_prune([state[n] for n in prunable], None, sparsity)
    for n, m in zip(prunable, masks):
        state[n] = state[n] * m
    density = {n: float(m.float().mean()) for n, m in zip(prunable, masks)}
    return swamp_ext.models.to_torch(name, state, shape, 10), density


def per_batch_ms(fn, x: torch.Tensor) -> float:
    fn(x)
    t0 = time.perf_counter()
    fn(x)
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, min(2000, int(0.02 / once)))
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="default: the issue's three")
    p.add_argument("--sparsities", nargs="*", type=float, default=None)
    p.add_argument("--batches", nargs="*", type=int, default=[1, 64])
    p.add_argument("--repeats", type=int, default=7, help="interleaved timings per variant")
    p.add_argument("--quick", action="store_true", help="3 repeats, weights at θ0")
    p.add_argument("--weights", choices=("trained", "init"), default="trained",
                   help="what global magnitude prunes: the dense model trained for --epochs "
                        "(default) or its initial weights θ0")
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    repeats = 3 if a.quick else a.repeats
    plan = [(m, tuple(a.sparsities) if a.sparsities else s) for m, s in PLAN
            if a.models is None or m in a.models]
    for m in a.models or []:
        if m not in SHAPES:
            raise SystemExit(f"unknown model {m!r}: one of {', '.join(SHAPES)}")
    weights = "init" if a.quick else a.weights
    print(f"# Sparse inference, {machine('cpu')}; masks: one-shot global magnitude of the "
          + ("initial weights θ0" if weights == "init" else
             f"dense model trained {a.epochs} epochs"))
    print("ms per batch (median of interleaved timings); x: dense time / this one's")
    print(f"{'model':<14}{'sparsity':>9}{'batch':>6}{'dense ms':>10}{'swamp ms':>10}{'x':>7}"
          f"{'torch CSR ms':>13}{'x':>7}{'swamp/CSR':>10}{'MB dense':>9}{'MB swamp':>9}"
          f"{'sparse layers':>15}")
    layer_rows = []
    g = torch.Generator().manual_seed(0)
    for name, sparsities in plan:
        for sp in sparsities:
            dense, density = pruned_model(name, sp, "init" if a.quick else a.weights,
                                          a.epochs)
            shape = SHAPES[name]
            ours = sparsify(dense, sparse="auto", example_input=torch.zeros(1, *shape),
                            batch_sizes=a.batches)
            theirs = torch_csr(dense)
            made = choices(ours)
            layer_rows.append((name, sp, made))
            n_sparse = sum(c.sparse for c in made)
            mb_d, mb_s = state_bytes(dense) / 2**20, state_bytes(ours) / 2**20
            for b in a.batches:
                x = torch.randn(b, *shape, generator=g)
                with torch.inference_mode():
                    ref = dense(x)
                    err = (ours(x) - ref).abs().max().item()
                    err_t = (theirs(x) - ref).abs().max().item()
                    if err > 1e-3 * (1 + ref.abs().max().item()) or err_t > 1e-3 * (
                            1 + ref.abs().max().item()):
                        raise SystemExit(f"{name} {sp}: outputs differ ({err:.2e}, {err_t:.2e})")
                    t = {"dense": [], "ours": [], "torch": []}
                    for _ in range(repeats):
                        for k, f in (("dense", dense), ("ours", ours), ("torch", theirs)):
                            t[k].append(per_batch_ms(f, x))
                md, mo, mt = (statistics.median(t[k]) for k in ("dense", "ours", "torch"))
                print(f"{name:<14}{100 * sp:>8.1f}%{b:>6}{md:>10.3f}{mo:>10.3f}{md / mo:>7.2f}"
                      f"{mt:>13.3f}{md / mt:>7.2f}{mt / mo:>10.2f}{mb_d:>9.3f}{mb_s:>9.3f}"
                      f"{n_sparse:>8}/{len(made)}", flush=True)
    print("\n# Per layer: density after global magnitude pruning, and the auto rule's choice "
          "(x: dense / sparse time measured at conversion)")
    for name, sp, made in layer_rows:
        print(f"{name} at {100 * sp:.1f}%:")
        for c in made:
            sx = ", ".join(f"b{b} {v:.2f}x" for b, v in c.speedup.items())
            print(f"  {c.name:<18} {str(list(c.shape)):<18} density {c.density:7.4f}  "
                  f"{'sparse' if c.sparse else 'dense ':<7} {sx}")


if __name__ == "__main__":
    main()
