"""Where channels-last pays, in plain PyTorch (the lever Config.precision does not pull yet): one
training step (SGD, batch 128) of a zoo model's PyTorch twin in fp32 and bf16 autocast, with NCHW
weights and inputs ("none"), channels-last inputs only ("input"), channels-last activations before
every convolution ("acts") and channels-last weights and inputs ("full"), as a ratio of the fp32
NCHW step, measured in one run.

    python benchmarks/channels_last.py
    python benchmarks/channels_last.py --models resnet20 --steps 30
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from swamp_ext.torch_models import build

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu import machine  # noqa: E402

SHAPES = {"conv4_small": (1, 28, 28), "resnet20": (3, 32, 32)}
CL = torch.channels_last


def step_seconds(name: str, amp: bool, mode: str, steps: int) -> float:
    torch.manual_seed(0)
    shape = SHAPES.get(name, (3, 32, 32))
    m = build(name, shape, 10)
    if mode == "full":
        m = m.to(memory_format=CL)
    if mode == "acts":
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.register_forward_pre_hook(lambda _, a: (a[0].contiguous(memory_format=CL),))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, *shape), torch.randint(0, 10, (128,))
    if mode != "none":
        x = x.contiguous(memory_format=CL)

    def step() -> None:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["conv4_small", "resnet20"])
    p.add_argument("--steps", type=int, default=15)
    a = p.parse_args()
    print(f"{machine('cpu')}\n")
    print("| model | precision | layout | ms / step | x fp32 NCHW |")
    print("|---|---|---|---|---|")
    for name in a.models:
        base = None
        for amp in (False, True):
            for mode in ("none", "input", "acts", "full"):
                s = step_seconds(name, amp, mode, a.steps)
                base = base or s
                print(f"| {name} | {'bf16' if amp else 'fp32'} | {mode} | {1000 * s:.1f} | "
                      f"{s / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
