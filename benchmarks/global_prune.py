"""Global magnitude pruning: swamp_ext vs prune.global_unstructured vs concat+kthvalue.

Each method runs in its own child process (one after the other, never two at once) so that its peak
memory can be read from the kernel (VmHWM after a reset). "extra memory" is the peak resident size
minus the resident size with the weights allocated, minus the 1-byte-per-weight bool mask result
that every method has to produce; it is printed as a fraction of the weights' size.

    python benchmarks/global_prune.py                 # 1e7, 1e8, 5e8 weights, plus 1e9 for ours
    python benchmarks/global_prune.py --sizes 1e7     # quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

RATIO = 0.2
GIB = 1024**3


def layer_sizes(total: int, layers: int = 40) -> list[int]:
    # a model-like spread: a few big tensors and many small ones
    weights = [1.0 + (i % 7) * (1 + i // 10) for i in range(layers)]
    s = sum(weights)
    sizes = [max(1, int(total * w / s)) for w in weights]
    sizes[-1] += total - sum(sizes)
    return sizes


def rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(method: str, total: int) -> dict:
    import torch

    torch.manual_seed(0)
    sizes = layer_sizes(total)
    if method == "global_unstructured":
        import torch.nn.utils.prune as prune

        modules = []
        for n in sizes:
            m = torch.nn.Module()
            m.weight = torch.nn.Parameter(torch.randn(n), requires_grad=False)
            modules.append(m)
        weights = None
    else:
        weights = [torch.randn(n) for n in sizes]
    if method == "swamp_ext":
        import swamp_ext  # loaded before the baseline: the library's code is not working memory
    base = rss_bytes("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    if method == "swamp_ext":
        masks = swamp_ext.ops.global_magnitude_prune(weights, None, RATIO)
    elif method == "concat_kthvalue":
        flat = torch.cat([w.abs().reshape(-1) for w in weights])
        k = int(RATIO * flat.numel() + 0.5)
        thr = flat.kthvalue(k).values
        del flat
        masks = [w.abs() > thr for w in weights]
    elif method == "global_unstructured":
        params = [(m, "weight") for m in modules]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=RATIO)
        masks = [m.weight_mask for m in modules]
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t0
    peak = rss_bytes("VmHWM")
    pruned = sum(int((~m.bool()).sum()) for m in masks)
    return {"seconds": seconds, "extra_bytes": peak - base - total, "pruned": pruned}


def run_child(method: str, total: int, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", method, "--total", str(total)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimated_peak_gib(method: str, total: int) -> float:
    # weights + the method's known working memory (measured at small sizes: ~11x and ~4x)
    factor = {"global_unstructured": 12.5, "concat_kthvalue": 5.5, "swamp_ext": 1.5}[method]
    return factor * 4 * total / GIB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="1e7,1e8,5e8", help="comma-separated weight counts")
    p.add_argument("--ours-only-sizes", default="1e9", help="sizes run with swamp_ext only")
    p.add_argument("--memory-gib", type=float, default=20.0, help="skip runs estimated above this")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--total", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.total)))
        return

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ratio {RATIO}")
    print(f"{'weights':>9} {'method':<20} {'seconds':>9} {'extra mem':>10} {'extra/wts':>9}"
          f" {'pruned':>11}  {'ours faster by':>14}")
    plan = [(int(float(s)), ["global_unstructured", "concat_kthvalue", "swamp_ext"])
            for s in a.sizes.split(",") if s]
    plan += [(int(float(s)), ["swamp_ext"]) for s in a.ours_only_sizes.split(",") if s]
    for total, methods in plan:
        results = {}
        for m in methods:
            need = estimated_peak_gib(m, total)
            if need > a.memory_gib:
                results[m] = {"error": f"skipped: needs ~{need:.0f} GiB > {a.memory_gib:.0f} GiB"}
            else:
                results[m] = run_child(m, total, a.timeout)
        ours = results.get("swamp_ext", {})
        for m, r in results.items():
            if "error" in r:
                print(f"{total:>9.0e} {m:<20} {r['error']}")
                continue
            ratio = ""
            if m != "swamp_ext" and "seconds" in ours:
                ratio = f"{r['seconds'] / ours['seconds']:.1f}x"
            frac = r["extra_bytes"] / (4 * total)
            print(f"{total:>9.0e} {m:<20} {r['seconds']:>9.3f} {r['extra_bytes'] / GIB:>8.3f}Gi"
                  f" {frac:>9.1%} {r['pruned']:>11d}  {ratio:>14}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
