"""Mixed precision, measured in one run: the whole SWAMP run in fp32 / bf16 / fp16
(Config.precision) against the plain-PyTorch loop (benchmarks/reference_torch.py) at the same
precision (autocast around the forward and the loss, as a PyTorch user writes it), with the test
accuracy of each.

    python benchmarks/precision.py                       # conv4_small, mnist5k, 3 rounds
    python benchmarks/precision.py --rounds 6 --seeds 3  # the issue's setting (6 rounds of 50%)

Prints the CPU, whether it has bf16 instructions (AMX-BF16 / AVX512-BF16: without them bf16 is
emulated and slower) and a table of seconds, ratios and accuracies.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="conv4_small")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--no-reference", action="store_true", help="skip the plain-PyTorch loop")
    a = p.parse_args()
    warnings.filterwarnings("ignore", message="precision='bf16' on a CPU")
    data = swamp_ext.datasets.load(a.dataset)
    print(f"{machine('cpu')}; bf16 instructions: {swamp_ext.engine.cpu_has_native_bf16()}; "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{a.model} on {a.dataset}, SWAMP-{a.particles}, {a.rounds} rounds of 50% pruning, "
          f"{a.epochs} epochs a round (1 rewind epoch), {a.seeds} seed(s)\n")
    rows = []
    base_s = None
    for prec in a.precisions:
        ours_s, ours_acc, ref_s, ref_acc, skipped = [], [], [], [], 0
        for seed in range(a.seeds):
            cfg = swamp_ext.Config(model=a.model, method="swamp", particles=a.particles,
                                   rounds=a.rounds, epochs=a.epochs, rewind_epochs=1,
                                   prune_ratio=0.5, seed=seed, precision=prec)
            t0 = time.perf_counter()
            res = swamp_ext.run_imp(cfg, data, progress=False)
            ours_s.append(time.perf_counter() - t0)
            ours_acc.append(res.rounds[-1].test_acc)
            skipped += sum(r.skipped_steps for r in res.rounds)
            if not a.no_reference and prec != "fp16":  # the reference has no loss scaling
                t0 = time.perf_counter()
                out = reference_torch.run(cfg, data, amp=AMP[prec])
                ref_s.append(time.perf_counter() - t0)
                ref_acc.append(out[-1][1])
        s = statistics.median(ours_s)
        base_s = base_s or s
        rows.append((prec, s, base_s / s, statistics.mean(ours_acc), skipped,
                     statistics.median(ref_s) if ref_s else None,
                     statistics.mean(ref_acc) if ref_acc else None))
    print("| precision | swamp_ext s | speed-up vs fp32 | acc | skipped steps | plain PyTorch s "
          "| swamp_ext faster by | PyTorch acc |")
    print("|---|---|---|---|---|---|---|---|")
    for prec, s, up, acc, sk, rs, racc in rows:
        ref = f"{rs:.1f} | {rs / s:.2f}x | {racc:.4f}" if rs else "— | — | —"
        print(f"| {prec} | {s:.1f} | {up:.2f}x | {acc:.4f} | {sk} | {ref} |")


if __name__ == "__main__":
    main()
