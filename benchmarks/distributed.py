"""Runs spread over processes (torchrun, gloo on this machine's cores), two tables in one run.

Particles spread: the round time for 1 and 2 processes (and more with --ranks), the share of it
spent communicating, and the swamp/imp round ratio per process count.

Data parallel inside a particle (more processes than particles): IMP of --dp-model with 1 process
of 1 thread against 2 processes of 1 thread each (the closest a 2-core machine comes to two
devices): the speed-up, the gradient all-reduce's time in flight, the share of it hidden behind
backward and the share of the round the steps waited for it (swamp_ext.distributed.
gradient_sync_stats); then agreement with
one process: IMP on 2 processes and SWAMP-2 on 4 processes, masks equal and test accuracy per
round, and how far the weights are apart after one SGD step, for batch-norm models also with
Config.sync_batchnorm (the whole batch's statistics, as torch.nn.SyncBatchNorm).

    python benchmarks/distributed.py                       # both tables
    python benchmarks/distributed.py --table spread --model conv4_small --ranks 1 2 --rounds 2
    python benchmarks/distributed.py --table data-parallel

On a GPU machine with G GPUs (--device cuda --ranks 1 2 4 8), each process drives one GPU. The
goal there: a SWAMP-N round on N GPUs within 1.15x of an IMP round on one. On a CPU, P processes
share the machine's cores (each gets cores / P threads), so more processes do not add compute:
the figure to read is the overhead of spreading, not a speed-up. From 2 processes on, the IMP
column is IMP trained data-parallel by all of them.

The communication share is estimated: after the run, every process times the all-gathers a round
makes (each parameter and buffer of its particles, their evaluation outputs and losses, with the
header each gather sends first) on tensors of the same sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def dp_worker(a) -> None:
    """--dp-worker scale: IMP rounds timed, plus the gradient all-reduce of a step timed alone;
    --dp-worker agree: runs spread over the processes against the same run in one process."""
    import torch.distributed as dist

    import swamp_ext
    from swamp_ext import distributed

    if distributed.launched_by_torchrun():
        distributed.init_from_env("cpu", 600)
    data = swamp_ext.datasets.load(a.dataset)
    out: dict = {}
    if a.dp_worker == "scale":
        cfg = swamp_ext.Config(model=a.dp_model, method="imp", rounds=a.dp_rounds,
                               epochs=a.dp_epochs, seed=1, data_parallel=a.dp_layout)
        # the gradient all-reduces of the rounds (counted from the ticket's end)
        res = swamp_ext.run_imp(cfg, data, progress=False,
                                on_ticket=lambda _: distributed.gradient_sync_stats(reset=True))
        sync = distributed.gradient_sync_stats(reset=True)
        out["round"] = statistics.fmean(r.seconds for r in res.rounds[1:] or res.rounds)
        out["acc"] = [r.test_acc for r in res.rounds]
        out["in_flight"] = sync["in_flight_s"] / len(res.rounds)
        out["blocked"] = sync["blocked_s"] / len(res.rounds)
        out["buckets"] = sync["buckets"] / max(sync["steps"], 1)
        out["processes_per_particle"] = [r.processes_per_particle for r in res.rounds]
        if dist.is_initialized():
            out["auto"] = distributed.data_parallel_choice(
                dataclasses.replace(cfg, data_parallel="auto"), data.input_shape,
                data.num_classes, dist.get_world_size())
    else:
        # the runs in one process: rank 0 alone makes them (the others wait at a barrier)
        primary = dist.get_rank() == 0

        def compare(name, cfg):
            spread = swamp_ext.run_imp(cfg, data, progress=False)
            if not primary:
                dist.barrier()
                return
            alone = swamp_ext.run_imp(cfg, data, progress=False, process_group=False)
            # the yardstick: the same run in one process with another seed
            other = swamp_ext.run_imp(dataclasses.replace(cfg, seed=cfg.seed + 1), data,
                                      progress=False, process_group=False)
            # and float rounding alone: the same run in one process with 2 threads (other
            # reduction splits in the kernels, ~1e-8 apart after a few steps)
            threads = torch.get_num_threads()
            torch.set_num_threads(2)
            rounding = swamp_ext.run_imp(cfg, data, progress=False, process_group=False)
            torch.set_num_threads(threads)
            dist.barrier()

            def same(x, y):
                return sum(int((x.masks[k] == y.masks[k]).sum()) for k in y.masks) / \
                    sum(m.numel() for m in y.masks.values())

            out[name] = dict(
                masks=same(spread, alone), masks_seed=same(other, alone),
                masks_threads=same(rounding, alone),
                acc_threads=[r.test_acc for r in rounding.rounds],
                acc=[r.test_acc for r in spread.rounds],
                acc_alone=[r.test_acc for r in alone.rounds],
                acc_seed=[r.test_acc for r in other.rounds],
                layout=[r.processes_per_particle for r in spread.rounds])

        method = "imp" if a.dp_particles == 1 else "swamp"
        runs = [(m, sync) for m in a.dp_agree_models for sync in (False, True)
                if not sync or m in a.dp_sync_models]
        for model, sync in runs:
            key = model + (" sync_bn" if sync else "")
            compare(key, swamp_ext.Config(model=model, method=method,
                                          particles=a.dp_particles, rounds=a.dp_rounds,
                                          epochs=a.dp_epochs, seed=5, sync_batchnorm=sync,
                                          data_parallel="always"))
            # one SGD step from the same init: the ticket at step 1, spread and alone
            cfg = swamp_ext.Config(model=model, method="imp", rounds=1, epochs=1,
                                   rewind_epochs=0, rewind_steps=1, sync_batchnorm=sync,
                                   data_parallel="always")
            tickets: list = []
            swamp_ext.run_imp(cfg, data, progress=False, on_ticket=tickets.append)
            if primary:
                swamp_ext.run_imp(cfg, data, progress=False, process_group=False,
                                  on_ticket=tickets.append)
            dist.barrier()
            if not primary:
                continue
            for part, keep in (("step", lambda k: "running_" not in k and "num_batches" not in k),
                               ("step_bn", lambda k: "running_" in k)):
                out[key][part] = max((float((tickets[0][k].double() - tickets[1][k].double())
                                             .abs().max()) for k in tickets[0] if keep(k)),
                                      default=0.0)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("RESULT " + json.dumps(out), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


def _launch(script_args: list, ranks: int, threads: int):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, __file__, *script_args] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={ranks}", __file__, *script_args]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if run.returncode != 0 or line is None:
        print(f"{ranks} processes failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        return None
    return json.loads(line[7:])


def data_parallel_table(a) -> None:
    base = ["--dataset", a.dataset, "--dp-rounds", str(a.dp_rounds),
            "--dp-epochs", str(a.dp_epochs)]
    print(f"\ndata parallel inside a particle: IMP on {a.dataset}, {a.dp_rounds} rounds x "
          f"{a.dp_epochs} epochs, 1 thread per process; mean round seconds over rounds "
          f"1..{a.dp_rounds - 1}. 2 processes: data parallel (always) or one process per "
          "particle, the other idle (never); auto: Config.data_parallel's rule")
    print("gradient all-reduce per round: 'in flight' the time some gradient bucket was being "
          "summed, 'hidden' the share of it that overlapped backward, 'exposed' the time the step "
          "waited for it as a share of the round")
    print(f"{'model':>14} {'processes':>9} {'layout':>7} {'round s':>8} {'speed-up':>8} "
          f"{'buckets':>7} {'in flight s':>11} {'hidden':>6} {'exposed':>7}  "
          "test accuracy per round")
    for model in [a.dp_model, *a.dp_scale_models]:
        one, times, auto = None, {}, None
        for ranks, layout in ((1, "always"), (2, "always"), (2, "never")):
            r = _launch([*base, "--dp-model", model, "--dp-layout", layout,
                         "--dp-worker", "scale"], ranks, 1)
            if r is None:
                continue
            one = one or r["round"]
            times[(ranks, layout)] = r["round"]
            auto = r.get("auto", auto)
            hidden = 1 - r["blocked"] / r["in_flight"] if r["in_flight"] > 0 else 0.0
            print(f"{model:>14} {ranks:9d} {layout if ranks > 1 else '':>7} {r['round']:8.2f} "
                  f"{one / r['round']:7.2f}x {r['buckets']:7.1f} {r['in_flight']:11.2f} "
                  f"{100 * hidden:5.1f}% {100 * r['blocked'] / r['round']:6.1f}%  "
                  f"{[round(x, 4) for x in r['acc']]}")
        if auto is not None and len(times) == 3:
            faster = "always" if times[(2, "always")] < times[(2, "never")] else "never"
            picked = "always" if auto[0] else "never"
            print(f"{model:>14} auto picks {picked} ({auto[1]}); measured faster: {faster}")
    if not a.dp_agreement:
        return
    print(f"\nagreement with one process ({a.dp_rounds} rounds x {a.dp_epochs} epochs; the same "
          "run in one process and spread, inside one job)")
    print("masks equal and max |test accuracy difference| over the rounds, spread vs one process"
          " and, for scale, one process with 2 threads (float rounding alone) and with another "
          "seed vs one process; after 1 step: the max |difference| of the weights and of the "
          "batch-norm running statistics")
    print(f"{'run':>22} {'model':>22} {'masks equal':>11} {'max |acc diff|':>14} "
          f"{'2 threads':>18} {'other seed':>18} {'1 step: weights':>15} {'bn stats':>8}  "
          "processes per particle")
    for ranks, particles in ((2, 1), (4, 2)):
        r = _launch([*base, "--dp-worker", "agree", "--dp-particles", str(particles),
                     "--dp-agree-models", *a.dp_agree_models,
                     "--dp-sync-models", *a.dp_sync_models], ranks, 1)
        if r is None:
            continue
        what = f"{'IMP' if particles == 1 else f'SWAMP-{particles}'} on {ranks} processes"
        for model, m in r.items():
            worst = max(abs(x - y) for x, y in zip(m["acc"], m["acc_alone"]))
            seed = max(abs(x - y) for x, y in zip(m["acc_seed"], m["acc_alone"]))
            thr = max(abs(x - y) for x, y in zip(m["acc_threads"], m["acc_alone"]))
            print(f"{what:>22} {model:>22} {100 * m['masks']:10.3f}% {100 * worst:11.2f} pt "
                  f"{100 * m['masks_threads']:8.3f}% {100 * thr:5.2f} pt "
                  f"{100 * m['masks_seed']:7.2f}% {100 * seed:6.2f} pt "
                  f"{m['step']:15.3g} {m['step_bn']:8.3g}  {m['layout']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="lenet_300_100")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--particles", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="the first round is not timed")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--table", choices=("all", "spread", "data-parallel"), default="all")
    p.add_argument("--no-agreement", dest="dp_agreement", action="store_false",
                   help="data-parallel table: the scaling rows only")
    p.add_argument("--dp-model", default="conv4_small", help="the data-parallel scaling model")
    p.add_argument("--dp-rounds", type=int, default=3)
    p.add_argument("--dp-epochs", type=int, default=2)
    p.add_argument("--dp-agree-models", nargs="+", default=["lenet_300_100", "conv4_small"])
    p.add_argument("--dp-scale-models", nargs="*", default=["lenet_300_100"],
                   help="also time these (data parallel against one process per particle)")
    p.add_argument("--dp-layout", default="always", help=argparse.SUPPRESS)
    p.add_argument("--dp-sync-models", nargs="*", default=["conv4_small"],
                   help="also run these with Config.sync_batchnorm")
    p.add_argument("--dp-particles", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dp-worker", choices=("scale", "agree"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    if a.dp_worker:
        dp_worker(a)
        return
    print(f"CPU: {_cpu_name()}")
    if a.table in ("all", "spread"):
        spread_table(a)
    if a.table in ("all", "data-parallel"):
        data_parallel_table(a)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def spread_table(a) -> None:
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
        r = _launch(args, ranks, threads)
        if r is None:
            continue
        base = base or r["swamp"]
        share = 100 * r["comm"] / r["swamp"]
        print(f"{ranks:9d} {threads:7d} {r['imp']:8.2f} {r['swamp']:8.2f} "
              f"{r['swamp'] / r['imp']:8.2f}x {r['comm']:7.3f} {share:9.1f}% "
              f"{r['swamp'] / base:14.2f}x")


if __name__ == "__main__":
    main()
