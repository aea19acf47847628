"""SWAMP with its particles spread over processes (torchrun, gloo on this machine's cores): the
round time for 1 and 2 processes (and more with --ranks), the share of it spent communicating,
and the swamp/imp round ratio per process count, measured in one run.

    python benchmarks/distributed.py                       # lenet_300_100 on mnist5k, 1 and 2
    python benchmarks/distributed.py --model conv4_small --ranks 1 2 --rounds 2

On a GPU machine with G GPUs (--device cuda --ranks 1 2 4 8), each process drives one GPU. The
goal there: a SWAMP-N round on N GPUs within 1.15x of an IMP round on one. On a CPU, P processes
share the machine's cores (each gets cores / P threads), so more processes do not add compute:
the figure to read is the overhead of spreading, not a speed-up.

The communication share is estimated: after the run, every process times the all-gathers a round
makes (each parameter and buffer of its particles, their evaluation outputs and losses, with the
header each gather sends first) on tensors of the same sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


def worker(a) -> None:
    import torch.distributed as dist

    import swamp_ext
    from swamp_ext import distributed

    device = a.device
    if distributed.launched_by_torchrun():
        device = distributed.init_from_env(a.device, 600)
    data = swamp_ext.datasets.load(a.dataset)
    out = {}
    for method in ("imp", "swamp"):
        cfg = swamp_ext.Config(model=a.model, method=method, particles=a.particles,
                               rounds=a.rounds, epochs=a.epochs, device=device,
                               single_particle_rounds=0)
        res = swamp_ext.run_imp(cfg, data, progress=False)
        out[method] = statistics.fmean(r.seconds for r in res.rounds[1:] or res.rounds)
    comm = 0.0
    if dist.is_initialized():
        size = dist.get_world_size()
        most = -(-a.particles // size)
        state = swamp_ext.models.create(a.model, list(data.input_shape), data.num_classes)[0]
        tensors = [torch.zeros(most, *t.shape, dtype=t.dtype, device=device)
                   for t in state.values()]
        tensors += [torch.zeros(most, data.x_test.shape[0], data.num_classes, device=device),
                    torch.zeros(most, dtype=torch.float64, device=device)]
        head = torch.zeros(11, dtype=torch.long, device=device)

        def gathers():
            for t in tensors:
                for x in (head, t):
                    dist.all_gather([torch.empty_like(x) for _ in range(size)], x)

        gathers()
        t0 = time.perf_counter()
        for _ in range(3):
            gathers()
        comm = (time.perf_counter() - t0) / 3
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("RESULT " + json.dumps({"imp": out["imp"], "swamp": out["swamp"], "comm": comm}),
              flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="the first round is not timed")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    cores = os.cpu_count() or 1
    print(f"{a.model} on {a.dataset}, {a.particles} particles, {a.epochs} epochs/round, "
          f"{a.device}, torch {torch.__version__}, {cores} cores; mean round seconds over rounds "
          f"1..{a.rounds - 1}")
    print(f"{'processes':>9} {'threads':>7} {'imp s':>8} {'swamp s':>8} {'swamp/imp':>9} "
          f"{'comm s':>7} {'comm share':>10} {'swamp vs 1 proc':>15}")
    base = None
    args = ["--model", a.model, "--dataset", a.dataset, "--device", a.device, "--particles",
            str(a.particles), "--rounds", str(a.rounds), "--epochs", str(a.epochs), "--worker"]
    for ranks in a.ranks:
        threads = max(1, cores // ranks) if a.device == "cpu" else 1
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo")
        cmd = [sys.executable, __file__, *args] if ranks == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc_per_node={ranks}", __file__, *args]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if run.returncode != 0 or line is None:
            print(f"{ranks} processes failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            continue
        r = json.loads(line[7:])
        base = base or r["swamp"]
        share = 100 * r["comm"] / r["swamp"]
        print(f"{ranks:9d} {threads:7d} {r['imp']:8.2f} {r['swamp']:8.2f} "
              f"{r['swamp'] / r['imp']:8.2f}x {r['comm']:7.3f} {share:9.1f}% "
              f"{r['swamp'] / base:14.2f}x")


if __name__ == "__main__":
    main()
