"""Command line: `python -m swamp_ext` / `swamp-ext`.

    swamp-ext run --model lenet_300_100 --dataset mnist5k --method swamp --particles 4 \\
        --rounds 5 --epochs 10 --out runs/demo
    swamp-ext --cmake-prefix-path     # folder for CMAKE_PREFIX_PATH (find_package(swamp_core))

Spread the particles over processes (one per GPU, or several on a CPU):

    torchrun --standalone --nproc_per_node=2 -m swamp_ext run --particles 4 --out runs/demo
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Optional, Sequence


def cmake_prefix_path() -> str:
    """Folder to add to CMAKE_PREFIX_PATH so that find_package(swamp_core) works."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "lib", "cmake", "swamp_core")):
        return here
    # Imported from a source checkout: point at the installed package instead.
    from importlib import metadata

    try:
        installed = str(metadata.distribution("swamp_ext").locate_file("swamp_ext"))
    except metadata.PackageNotFoundError:
        installed = ""
    if installed and os.path.isdir(os.path.join(installed, "lib", "cmake", "swamp_core")):
        return installed
    raise SystemExit("swamp_ext is not installed: run `pip install --no-build-isolation .` first")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from .config import Config

    defaults = Config()
    for f in dataclasses.fields(Config):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        # default None everywhere: only flags given on the command line override a recipe / file
        if f.name == "use_swa":
            p.add_argument(flag, choices=["auto", "on", "off"], default=None,
                           help="force SWA on/off (default: the method's own)")
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"(default: {default})")
        elif f.name == "rewind_steps":
            p.add_argument(flag, type=int, default=None, help="overrides --rewind-epochs")
        else:
            p.add_argument(flag, type=type(default), default=None, help=f"(default: {default})")


def _config_from_args(args: argparse.Namespace) -> tuple[Any, str]:
    """Config defaults <- recipe or --config file <- flags given; returns (config, dataset)."""
    from . import recipes
    from .config import Config

    values: dict[str, Any] = {}
    dataset = "mnist5k"
    if args.recipe and args.config:
        raise ValueError("give either --recipe or --config, not both")
    if args.recipe or args.config:
        r = recipes.get(args.recipe) if args.recipe else recipes.load_file(args.config)
        values.update(r.config)
        dataset = r.dataset
    for name in Config.fields():
        v = getattr(args, name)
        if v is None:
            continue
        if name == "use_swa":
            v = {"auto": None, "on": True, "off": False}[v]
        values[name] = v
    return Config.from_dict(values), (args.dataset or dataset)


def _print_round(r: Any) -> None:
    ens = f" ens {r.ensemble_acc:.4f}" if r.particles > 1 else ""
    print(f"round {r.round:3d}  sparsity {r.sparsity:7.4f}  acc {r.test_acc:.4f}  "
          f"nll {r.test_nll:.4f}{ens}  particles {r.particles}  {r.seconds:7.1f}s", flush=True)


def _run(args: argparse.Namespace) -> int:
    import swamp_ext
    from swamp_ext import distributed

    primary = True
    try:
        cfg, dataset = _config_from_args(args)
        if distributed.launched_by_torchrun():
            device = distributed.init_from_env(cfg.device, args.dist_timeout)
            cfg = dataclasses.replace(cfg, device=device)
            primary = distributed.resolve(None).primary
        options = {k: v for k, v in (("image_size", args.image_size),
                                     ("num_workers", args.workers)) if v is not None}
        if args.stream is not None:
            options["stream"] = {"on": True, "off": False}.get(args.stream, args.stream)
        data = swamp_ext.datasets.load(dataset, root=args.data_root, **options)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
        print(f"swamp-ext: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        try:
            swamp_ext._C.ensure_writable_dir(args.out, "--out")
        except ValueError as e:
            print(f"swamp-ext: error: {e}", file=sys.stderr)
            return 2
    say = print if primary else (lambda *a, **k: None)
    spread = f", particles spread over {os.environ.get('WORLD_SIZE')} processes" \
        if distributed.launched_by_torchrun() else ""
    say(f"swamp_ext {swamp_ext.__version__}: {cfg.method} on {data.name} with {cfg.model}, "
        f"{cfg.rounds} rounds x {cfg.epochs} epochs{spread}", flush=True)
    if args.out and not args.fresh and os.path.exists(os.path.join(args.out, "checkpoint.swamp")):
        say(f"resuming from the checkpoint in {args.out}", flush=True)
    try:
        result = swamp_ext.run_imp(cfg, data, on_round=_print_round if primary else None,
                                   progress=args.progress if primary else False,
                                   checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every,
                                   fresh=args.fresh, dist_timeout=args.dist_timeout)
    except swamp_ext.TrainingDivergedError as e:
        print(f"swamp-ext: {e}\n{len(e.rounds)} completed round(s) kept"
              + (f" in {args.out}" if args.out else ""), file=sys.stderr)
        return 3
    except ValueError as e:  # e.g. a checkpoint of another configuration
        print(f"swamp-ext: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not str(e).startswith("distributed run:"):
            raise
        print(f"swamp-ext: error: {e}", file=sys.stderr)  # another process died or hangs
        return 1
    if args.out and primary:
        result.save(args.out)
        print(f"wrote {os.path.join(args.out, 'results.json')} and "
              f"{os.path.join(args.out, 'model.safetensors')}")
    return 0


def _report(args: argparse.Namespace) -> int:
    import swamp_ext
    from swamp_ext import report

    try:
        runs = [swamp_ext.load_run(d) for d in getattr(args, "run_dir", ())]
        if args.command == "analyze":
            a, b = swamp_ext.load_run(args.run_a), swamp_ext.load_run(args.run_b)
            k = args.round
            if k is None:
                k = min(a.rounds[-1].round, b.rounds[-1].round)
            ra, rb = a.round(k), b.round(k)
            print(f"mask overlap at round {k}: {args.run_a} ({100 * ra.sparsity:.2f}% sparse) "
                  f"vs {args.run_b} ({100 * rb.sparsity:.2f}%)")
            for name, o in swamp_ext.analysis.mask_overlap(ra, rb).items():
                print(f"  {name or 'all prunable':<24} IoU {o.iou:.4f}  kept {o.kept_a} / "
                      f"{o.kept_b} of {o.total}, both {o.intersection}")
        elif args.command == "show":
            print("\n\n".join(report.show(r, d) for r, d in zip(runs, args.run_dir)))
        else:
            at = report.DEFAULT_AT if args.at is None else [a / 100 for a in args.at]
            print(report.compare(runs, at, markdown=args.markdown))
    except (ValueError, FileNotFoundError, IndexError) as e:
        print(f"swamp-ext: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="swamp-ext", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cmake-prefix-path", action="store_true",
        help="print the folder to put in CMAKE_PREFIX_PATH for find_package(swamp_core)")
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run IMP / SWAMP")
    run.add_argument("--dataset", default=None,
                     help="mnist5k (default) or digits (built in); cifar10, cifar100, mnist, "
                          "fashion_mnist, imagefolder (from --data-root)")
    run.add_argument("--data-root", default=None, help="folder of a dataset read from disk")
    run.add_argument("--image-size", type=int, default=None,
                     help="imagefolder: resize every image to N x N")
    run.add_argument("--stream", choices=("auto", "on", "off"), default=None,
                     help="imagefolder: decode batch by batch instead of caching the decoded "
                          "folder (auto: when it would take more than half the free memory)")
    run.add_argument("--workers", type=int, default=None,
                     help="imagefolder streamed: DataLoader worker processes")
    run.add_argument("--recipe", default=None, help="a named recipe (see `swamp-ext recipes`)")
    run.add_argument("--config", default=None, help="a TOML run file (a recipe you edited)")
    run.add_argument("--out", default=None, help="folder for results.json and model.safetensors")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="status line (default: when stderr is a terminal)")
    run.add_argument("--checkpoint-every", type=int, default=1,
                     help="epochs between checkpoints inside a particle's training (0: never)")
    run.add_argument("--fresh", action="store_true",
                     help="ignore an existing checkpoint in --out and start over")
    run.add_argument("--dist-timeout", type=float, default=1800.0,
                     help="under torchrun: seconds a process waits for the others before the run "
                          "stops with an error (default 1800)")
    _add_config_flags(run)
    sub.add_parser("recipes", help="list the built-in recipes")
    show = sub.add_parser("show", help="a run at a glance: config, rounds, the sparsest round "
                                       "within 1 point of dense")
    show.add_argument("run_dir", nargs="+", help="run folder(s) (--out / checkpoint_dir)")
    comp = sub.add_parser("compare", help="accuracy at chosen sparsities, method by method, "
                                          "against IMP with the spread over seeds")
    comp.add_argument("run_dir", nargs="+", help="run folders (runs differing only in the seed "
                                                 "are grouped)")
    comp.add_argument("--at", type=float, nargs="+", default=None,
                      help="sparsities in percent (default 50 80 90 95 98 99)")
    comp.add_argument("--markdown", action="store_true", help="a Markdown table")
    ana = sub.add_parser("analyze", help="analyses of kept rounds")
    kinds = ana.add_subparsers(dest="analysis", required=True)
    ov = kinds.add_parser("overlap", help="IoU of two runs' masks at a round, per layer")
    ov.add_argument("run_a")
    ov.add_argument("run_b")
    ov.add_argument("--round", type=int, default=None, help="default: the last round of both")
    args = parser.parse_args(argv)
    if args.cmake_prefix_path:
        print(cmake_prefix_path())
        return 0
    if args.version:
        import swamp_ext

        print(swamp_ext.__version__)
        return 0
    if args.command == "recipes":
        from . import recipes

        for n in recipes.names():
            r = recipes.get(n)
            print(f"{n}\n  {r.description}\n  dataset: {r.dataset}; model: {r.config.get('model')}"
                  f"\n  source: {r.source}\n  cost: {r.expected_cost}\n  file: {r.path}")
        return 0
    if args.command in ("show", "compare", "analyze"):
        return _report(args)
    if args.command == "run":
        from . import distributed

        try:
            return _run(args)
        except KeyboardInterrupt:
            print("\nswamp-ext: interrupted" + (
                f"; progress saved in {args.out}, run the same command to resume"
                if args.out else ""), file=sys.stderr)
            return 130
        finally:
            distributed.leave()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
