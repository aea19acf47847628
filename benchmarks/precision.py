"""Mixed precision and channels-last, measured in one run: the whole SWAMP run in fp32 / bf16 /
fp16 (Config.precision), contiguous or channels-last (Config.channels_last, "+cl"), against the
plain-PyTorch loop (benchmarks/reference_torch.py) with the same options, written as a PyTorch
user writes them (autocast around the forward and the loss; model.to(memory_format=
torch.channels_last) and NHWC inputs), with the test accuracy of each.

    python benchmarks/precision.py                          # conv4_small, mnist5k, 3 rounds
    python benchmarks/precision.py --rounds 6               # the goal's setting (50% a round)
    python benchmarks/precision.py --rounds 6 --seeds 3 --variants fp32 bf16+cl --no-reference

Prints the CPU, whether it has bf16 instructions (AMX-BF16 / AVX512-BF16: without them bf16 is
emulated and slower), what Config.channels_last="auto" picks there, and a table of seconds,
ratios and accuracies; the last columns compare with the plain-PyTorch fp32 loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

import swamp_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_torch  # noqa: E402
from gpu import machine  # noqa: E402

AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_variant(v: str) -> tuple[str, bool]:
    prec, _, opt = v.partition("+")
    if prec not in AMP or opt not in ("", "cl"):
        raise SystemExit(f"unknown variant {v!r}: fp32, bf16 or fp16, optionally +cl")
    return prec, opt == "cl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="conv4_small")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "bf16+cl", "fp16"],
                   help="precision, optionally +cl (channels-last); the first is the baseline")
    p.add_argument("--no-reference", action="store_true", help="skip the plain-PyTorch loop")
    p.add_argument("--diagnostics", action="store_true",
                   help="keep Config.diagnostics on (default off: the plain loop computes no "
                        "per-particle figures either, so both do the same work)")
    a = p.parse_args()
    variants = [(v, *parse_variant(v)) for v in a.variants]
    warnings.filterwarnings("ignore", message="precision='bf16' on a CPU")
    warnings.filterwarnings("ignore", message="precision='fp16' on a CPU")
    data = swamp_ext.datasets.load(a.dataset)
    auto = {prec: swamp_ext.running.plan_of(
        swamp_ext.Config(model=a.model, precision=prec), data.input_shape,
        data.num_classes).channels_last for prec in AMP}
    print(f"{machine('cpu')}; bf16 instructions: {swamp_ext.precision.cpu_has_native_bf16()}; "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"channels_last auto picks: {auto}")
    print(f"{a.model} on {a.dataset}, SWAMP-{a.particles}, {a.rounds} rounds of 50% pruning, "
          f"{a.epochs} epochs a round (1 rewind epoch), {a.seeds} seed(s), "
          f"{torch.get_num_threads()} threads, diagnostics {'on' if a.diagnostics else 'off'}\n")
    rows = []
    base_s = base_ref = None
    for name, prec, cl in variants:
        ours_s, ours_acc, ref_s, ref_acc, skipped = [], [], [], [], 0
        for seed in range(a.seeds):
            cfg = swamp_ext.Config(model=a.model, method="swamp", particles=a.particles,
                                   rounds=a.rounds, epochs=a.epochs, rewind_epochs=1,
                                   prune_ratio=0.5, seed=seed, precision=prec, channels_last=cl,
                                   diagnostics=a.diagnostics)
            t0 = time.perf_counter()
            res = swamp_ext.run_imp(cfg, data, progress=False)
            ours_s.append(time.perf_counter() - t0)
            ours_acc.append(res.rounds[-1].test_acc)
            skipped += sum(r.skipped_steps for r in res.rounds)
            if not a.no_reference and prec != "fp16":  # the reference has no loss scaling
                t0 = time.perf_counter()
                out = reference_torch.run(cfg, data, amp=AMP[prec], channels_last=cl)
                ref_s.append(time.perf_counter() - t0)
                ref_acc.append(out[-1][1])
        s = statistics.median(ours_s)
        rs = statistics.median(ref_s) if ref_s else None
        base_s = base_s or s
        if base_ref is None and rs is not None:
            base_ref = rs
        rows.append((name, s, base_s / s, statistics.mean(ours_acc), skipped, rs,
                     statistics.mean(ref_acc) if ref_acc else None))
    print("| variant | swamp_ext s | vs first | acc | skipped steps | plain PyTorch s | swamp_ext "
          "faster by (same options) | PyTorch acc | swamp_ext vs PyTorch " + a.variants[0] + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s, up, acc, sk, rs, racc in rows:
        ref = f"{rs:.1f} | {rs / s:.2f}x | {racc:.4f}" if rs else "— | — | —"
        vs = f"{base_ref / s:.2f}x" if base_ref else "—"
        print(f"| {name} | {s:.1f} | {up:.2f}x | {acc:.4f} | {sk} | {ref} | {vs} |")


if __name__ == "__main__":
    main()
