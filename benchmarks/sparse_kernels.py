"""Groundwork for the density-proportional training step (issue: speed): how much faster torch's
CSR kernels are than the dense ones for the three products of a linear layer's training step, at
LeNet-300-100's first layer (128 x 784 inputs, 300 outputs), by sparsity.

    python benchmarks/sparse_kernels.py
    python benchmarks/sparse_kernels.py --batch 256 --inputs 784 --outputs 300

forward y = x W^T (CSR W), input gradient dX = dY W (CSR W^T), weight gradient at the kept
positions only (sampled dense-dense product, torch.sparse.sampled_addmm). Ratios are dense / CSR
measured in the same run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch


def timed(f, n: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n


def measure(x: torch.Tensor, dy: torch.Tensor, wm: torch.Tensor,
            n: int) -> tuple[list[float], list[float]]:
    csr, csr_t = wm.to_sparse_csr(), wm.t().contiguous().to_sparse_csr()
    dense = [timed(lambda: x @ wm.t(), n), timed(lambda: dy @ wm, n), timed(lambda: dy.t() @ x, n)]
    sparse = [timed(lambda: (csr @ x.t()).t(), n), timed(lambda: (csr_t @ dy.t()).t(), n),
              timed(lambda: torch.sparse.sampled_addmm(csr, dy.t(), x, beta=0.0), n)]
    return dense, sparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--inputs", type=int, default=784)
    p.add_argument("--outputs", type=int, default=300)
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, a.inputs, generator=g)
    dy = torch.randn(a.batch, a.outputs, generator=g)
    w = torch.randn(a.outputs, a.inputs, generator=g)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; x {list(x.shape)}, "
          f"W {list(w.shape)}; dense/CSR time ratios (>1: CSR faster)")
    print(f"{'sparsity':>9} {'forward':>9} {'input grad':>11} {'weight grad':>12}"
          f" {'all three':>10}")
    for sparsity in (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99):
        wm = w * (torch.rand(w.shape, generator=g) >= sparsity)
        dense, sparse = measure(x, dy, wm, a.repeats)
        r = [d / s for d, s in zip(dense, sparse)]
        print(f"{100 * sparsity:8.0f}% {r[0]:9.2f} {r[1]:11.2f} {r[2]:12.2f} "
              f"{sum(dense) / sum(sparse):10.2f}")


if __name__ == "__main__":
    main()
