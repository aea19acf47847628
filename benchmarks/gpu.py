"""The GPU benchmarks of the GPU check (scripts/gpu_check.sh), each runnable alone. Every section
prints a table measured in one run (ratios) and, with --json, writes its figures.

    python benchmarks/gpu.py rounds   --device cuda   # SWAMP-4 round vs IMP round, per path
    python benchmarks/gpu.py run      --device cuda   # whole run vs the plain PyTorch loop
    python benchmarks/gpu.py zoo      --device cuda   # training images/s of every zoo model
    python benchmarks/gpu.py prune    --device cuda   # global pruning of 1e9 weights vs kthvalue
    python benchmarks/gpu.py dataset  --device cuda   # a torch Dataset with workers feeding it
    python benchmarks/gpu.py all --device cpu --quick # the dry run's sizes

Data: synthetic uint8 3x32x32 images (CIFAR-sized) kept on the device and normalised / augmented
there by the engine. --quick: tiny sizes (8x8 images; the CPU dry run), the figures mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import torch

import swamp_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_torch  # noqa: E402
from data_pipeline import Pairs  # noqa: E402
from round_cost import synthetic  # noqa: E402


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# ---- one SWAMP-4 round vs one IMP round ---------------------------------------------------------
def bench_rounds(a: argparse.Namespace) -> tuple[dict, str]:
    n = 128 if a.quick else 5120
    data = synthetic(n, 128 if a.quick else 1000, size=8 if a.quick else 32)
    model_names = ["resnet20"] if a.quick else ["resnet20", "wrn28_2"]
    modes = ["stacked", "sequential"] + (["threads"] if not a.device.startswith("cuda") else [])
    figures, rows = {}, []
    for m in model_names:
        base = dict(model=m, device=a.device, epochs=2, rounds=1,
                    rewind_epochs=0, batch_size=128, seed=0, augment=True)
        cfgs = {"imp": swamp_ext.Config(**base, method="imp")}
        for mode in modes:
            cfgs[f"swamp-4 {mode}"] = swamp_ext.Config(**base, method="swamp", particles=4,
                                                       particle_mode=mode)
        for prec in ("bf16",) if a.quick else ("bf16", "fp16"):
            cfgs[f"imp {prec}"] = swamp_ext.Config(**base, method="imp", precision=prec)
            cfgs[f"swamp-4 stacked {prec}"] = swamp_ext.Config(
                **base, method="swamp", particles=4, particle_mode="stacked", precision=prec)
        secs = {}
        for k, cfg in cfgs.items():
            if not a.quick:  # warm-up (cuDNN plans, allocator)
                swamp_ext.run_imp(cfg, data, progress=False)
            secs[k] = timed(lambda cfg=cfg: swamp_ext.run_imp(cfg, data, progress=False),
                            a.device)[0]
        for k, s in secs.items():
            rows.append([m, k, s, s / secs["imp"]])
            figures[f"{m}/{k}/seconds"] = s
            figures[f"{m}/{k}/vs_imp"] = s / secs["imp"]
    text = (f"One dense round, {n} images, batch 128 (fp32 unless named), augmented on the "
            "device\n\n"
            + table(["model", "run", "seconds", "x IMP round"], rows))
    return figures, text


# ---- the whole run vs the plain PyTorch loop -----------------------------------------------------
def bench_run(a: argparse.Namespace) -> tuple[dict, str]:
    n = 128 if a.quick else 5120
    data = synthetic(n, 128 if a.quick else 1000, size=8 if a.quick else 32)
    cfg = swamp_ext.Config(model="resnet20", method="swamp", particles=4, device=a.device,
                           rounds=1 if a.quick else 2, epochs=2 if a.quick else 3, rewind_epochs=1,
                           batch_size=128, seed=0)
    if not a.quick:
        swamp_ext.run_imp(swamp_ext.Config(**{**cfg.to_dict(), "rounds": 1}), data,
                          progress=False)  # warm-up
    ours_s, res = timed(lambda: swamp_ext.run_imp(cfg, data, progress=False), a.device)
    rows = [["swamp_ext (fp32)", ours_s, 1.0, res.rounds[-1].test_acc]]
    figures = {"swamp_ext_seconds": ours_s, "swamp_ext_acc": res.rounds[-1].test_acc}
    bf_s, bf = timed(lambda: swamp_ext.run_imp(
        swamp_ext.Config(**{**cfg.to_dict(), "precision": "bf16"}), data, progress=False),
        a.device)
    rows.append(["swamp_ext (bf16)", bf_s, bf_s / ours_s, bf.rounds[-1].test_acc])
    figures["swamp_ext_bf16_seconds"], figures["swamp_ext_bf16_acc"] = bf_s, bf.rounds[-1].test_acc
    peers = [("plain PyTorch fp32", None, False), ("plain PyTorch bf16 autocast", torch.bfloat16,
                                                     False)]
    if a.device.startswith("cuda"):
        peers += [("plain PyTorch bf16 autocast + channels-last", torch.bfloat16, True)]
    for label, amp, cl in peers:
        s, out = timed(lambda amp=amp, cl=cl: reference_torch.run(
            cfg, data, device=a.device, amp=amp, channels_last=cl), a.device)
        rows.append([label, s, s / ours_s, out[-1][1]])
        key = "torch_fp32" if amp is None else ("torch_bf16_cl" if cl else "torch_bf16")
        figures[f"{key}_seconds"], figures[f"{key}_acc"] = s, out[-1][1]
        figures[f"{key}_vs_swamp_ext"] = s / ours_s
    text = (f"Whole SWAMP-4 run: resnet20, {cfg.rounds} rounds x {cfg.epochs} epochs, {n} "
            "images\n\n" + table(["loop", "seconds", "x swamp_ext", "final acc"], rows))
    return figures, text


# ---- the zoo's training throughput ---------------------------------------------------------
def bench_zoo(a: argparse.Namespace) -> tuple[dict, str]:
    names = ["lenet_300_100", "conv4_small", "resnet20"] if a.quick else swamp_ext.models.names()
    batch, steps = (8, 1) if a.quick else (128, 5)
    figures, rows = {}, []
    for name in names:
        shape = [1, 28, 28] if name.startswith("lenet") else \
            ([3, 64, 64] if name == "resnet18_imagenet" else [3, 32, 32])
        ips = swamp_ext.models.train_throughput(name, shape, 10, batch, steps, a.device)
        figures[name] = ips
        rows.append([name, "x".join(map(str, shape)), ips])
    return figures, (f"Training images/s (forward, backward, masked SGD step), batch {batch}\n\n"
                     + table(["model", "input", "images/s"], rows))


# ---- global pruning ------------------------------------------------------------------------------
def bench_prune(a: argparse.Namespace) -> tuple[dict, str]:
    total = 10**6 if a.quick else 10**9
    parts = 20
    g = torch.Generator(device=a.device).manual_seed(0)
    ws = [torch.randn(total // parts, device=a.device, generator=g) for _ in range(parts)]
    ratio = 0.2
    ops_s, masks = timed(lambda: swamp_ext.ops.global_magnitude_prune(ws, None, ratio), a.device)
    ops_s = min(ops_s, timed(lambda: swamp_ext.ops.global_magnitude_prune(ws, None, ratio),
                             a.device)[0])
    del masks

    def kth() -> torch.Tensor:
        scores = torch.cat([w.abs().flatten() for w in ws])
        k = swamp_ext.ops.prune_count(ratio, scores.numel())
        thr = scores.kthvalue(k).values
        return [w.abs() > thr for w in ws]

    try:
        ref_s = min(timed(kth, a.device)[0], timed(kth, a.device)[0])
        ref_note = ""
    except torch.OutOfMemoryError as e:  # the concatenation does not fit
        ref_s, ref_note = float("nan"), f" (kthvalue: out of memory: {str(e)[:80]})"
    figures = {"weights": total, "swamp_ext_seconds": ops_s, "kthvalue_seconds": ref_s,
               "speedup": ref_s / ops_s}
    return figures, (f"Global magnitude pruning of {total:.0e} weights in {parts} tensors, "
                     f"ratio {ratio}{ref_note}\n\n"
                     + table(["method", "seconds", "x swamp_ext"],
                             [["swamp_ext.ops.global_magnitude_prune", ops_s, 1.0],
                              ["cat + kthvalue", ref_s, ref_s / ops_s]]))


# ---- a torch Dataset with workers feeding the device -------------------------------------------
def bench_dataset(a: argparse.Namespace) -> tuple[dict, str]:
    n = 256 if a.quick else 5120
    mem = synthetic(n, 128 if a.quick else 1000)
    workers = 2 if a.quick else 6
    cfg = swamp_ext.Config(model="resnet20", method="imp", device=a.device, rounds=1,
                           epochs=1 if a.quick else 2, rewind_epochs=0, batch_size=128, seed=0)
    swamp_ext.run_imp(cfg, mem, progress=False)  # warm-up
    mem_s, _ = timed(lambda: swamp_ext.run_imp(cfg, mem, progress=False), a.device)
    data = swamp_ext.datasets.from_torch(Pairs(mem.x_train, mem.y_train),
                                         Pairs(mem.x_test, mem.y_test), num_workers=workers,
                                         pin_memory=a.device.startswith("cuda"))
    ds_s, _ = timed(lambda: swamp_ext.run_imp(cfg, data, progress=False), a.device)
    wait = float(data.stats.get("train_wait_s", float("nan")))
    figures = {"tensors_seconds": mem_s, "dataset_seconds": ds_s, "ratio": ds_s / mem_s,
               "workers": workers, "wait_seconds": wait}
    return figures, (f"IMP round of resnet20 on {n} images: in-memory tensors vs a torch Dataset "
                     f"with {workers} workers\n\n"
                     + table(["data", "seconds", "x tensors", "training waited (s)"],
                             [["tensors on the device", mem_s, 1.0, 0.0],
                              ["torch Dataset + workers", ds_s, ds_s / mem_s, wait]]))


# ---- 2:4 sparse inference (torch's semi-structured kernels) -------------------------------------
class _Block(torch.nn.Module):
    """A ViT-like encoder block: attention (qkv and projection as nn.Linear) and an MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.heads, D // self.heads).unbind(2)
        a = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.n2(x))))


def bench_two_four(a: argparse.Namespace) -> tuple[dict, str]:
    from swamp_ext.inference import choices, semi_structured_refusal, sparsify

    why = semi_structured_refusal(torch.device(a.device))
    if why is not None:
        return {"skipped": why}, f"skipped: {why}"
    d, tokens = (128, 17) if a.quick else (384, 197)
    mlp = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
                              torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
                              torch.nn.Linear(4096, 1000))
    vit = torch.nn.Sequential(*[_Block(d, 6 if d % 6 == 0 else 4) for _ in range(6)])
    batches = [1, 16, 64] if a.quick else [1, 16, 64, 256, 1024]
    figures, rows = {}, []
    for name, net, shape in (("mlp 4096", mlp, (4096,)), (f"vit-like d{d} x6", vit,
                                                          (tokens, d))):
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.mul_(swamp_ext.ops.nm_prune([m.weight], None, 2, 4)[0])
        net = net.eval()
        sparse = sparsify(net, sparse="2:4", device=a.device, dtype=torch.bfloat16,
                          example_input=torch.zeros(1, *shape), batch_sizes=[batches[-1]])
        dense = net.to(a.device, torch.bfloat16)
        kept = sum(c.sparse for c in choices(sparse))
        for b in batches:
            x = torch.randn(b, *shape, device=a.device, dtype=torch.bfloat16)
            with torch.inference_mode():
                td = min(timed(functools.partial(dense, x), a.device)[0] for _ in range(5))
                ts = min(timed(functools.partial(sparse, x), a.device)[0] for _ in range(5))
            figures[f"{name} b{b}"] = td / ts
            rows.append([name, b, td * 1e3, ts * 1e3, td / ts,
                         f"{kept}/{len(choices(sparse))}"])
    return figures, ("bf16 inference, weights 2:4 by magnitude; 2:4 layers where torch converts "
                     "them and they measured faster at the largest batch\n\n"
                     + table(["model", "batch", "dense ms", "2:4 ms", "x dense",
                              "2:4 layers"], rows))


SECTIONS = {"rounds": bench_rounds, "run": bench_run, "zoo": bench_zoo, "prune": bench_prune,
            "dataset": bench_dataset, "two_four": bench_two_four}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("section", choices=[*SECTIONS, "all"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run)")
    p.add_argument("--json", help="write {section: {figures, table, machine}} here")
    a = p.parse_args()
    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    out = {}
    for name in SECTIONS if a.section == "all" else [a.section]:
        t0 = time.perf_counter()
        figures, text = SECTIONS[name](a)
        out[name] = {"figures": figures, "table": text, "machine": machine(a.device),
                     "seconds": time.perf_counter() - t0}
        print(f"## {name} — {machine(a.device)}\n\n{text}\n", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
