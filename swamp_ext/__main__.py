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
import logging
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
        doc = f.metadata["doc"].replace("``", "").replace("%", "%%")
        # default None everywhere: only flags given on the command line override a recipe / file
        if f.name == "use_swa":
            p.add_argument(flag, choices=["auto", "on", "off"], default=None,
                           help="force SWA on or off (default auto: the method's own)")
        elif f.name == "channels_last":
            p.add_argument(flag, choices=["auto", "on", "off"], nargs="?", const="on",
                           default=None, help=f"Config.{f.name}: {doc} (default: auto; the flag "
                                              "alone: on)")
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"Config.{f.name}: {doc} (default: {default})")
        elif f.name == "rewind_steps":
            p.add_argument(flag, type=int, default=None,
                           help=f"Config.{f.name}: {doc}; overrides --rewind-epochs")
        else:
            p.add_argument(flag, type=type(default), default=None,
                           help=f"Config.{f.name}: {doc} (default: {default})")


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
        elif name == "channels_last":
            v = {"auto": "auto", "on": True, "off": False}[v]
        values[name] = v
    return Config.from_dict(values), (args.dataset or dataset)


def _print_round(r: Any) -> None:
    ens = f" ens {r.ensemble_acc:.4f}" if r.particles > 1 and r.ensemble_acc is not None else ""
    print(f"round {r.round:3d}  sparsity {r.sparsity:7.4f}  acc {r.test_acc:.4f}  "
          f"nll {r.test_nll:.4f}{ens}  particles {r.particles}  {r.seconds:7.1f}s", flush=True)


def _run(args: argparse.Namespace) -> int:
    import swamp_ext
    from swamp_ext import distributed
    from swamp_ext.running import plan_of

    primary = True
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
    if args.out:
        swamp_ext._C.ensure_writable_dir(args.out, "--out")
    say = print if primary else (lambda *a, **k: None)
    spread = ""
    if distributed.launched_by_torchrun():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        dp, why = distributed.data_parallel_choice(cfg, data.input_shape, data.num_classes,
                                                   world)
        spread = f", particles spread over {distributed.describe_layout(world, cfg, dp)}" + \
            (f" ({why})" if cfg.data_parallel == "auto" and world > 1 else "")
    layout = plan_of(cfg, data.input_shape, data.num_classes).channels_last
    numerics = "" if cfg.precision == "fp32" and not layout else \
        f", {cfg.precision}" + (", channels-last" if layout else "")
    say(f"swamp_ext {swamp_ext.__version__}: {cfg.method} on {data.name} with {cfg.model}, "
        f"{cfg.rounds} rounds x {cfg.epochs} epochs{numerics}{spread}", flush=True)
    if args.out and not args.fresh and os.path.exists(os.path.join(args.out, "checkpoint.swamp")):
        say(f"resuming from the checkpoint in {args.out}", flush=True)
    board = None
    on_round = _print_round if primary else None
    if args.tensorboard and primary:
        board = swamp_ext.callbacks.TensorBoard(args.tensorboard)

        def on_round(r: Any) -> None:
            _print_round(r)
            board(r)
    try:
        result = swamp_ext.run_imp(cfg, data, on_round=on_round,
                                   progress=args.progress if primary else False,
                                   checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every,
                                   checkpoint_every_steps=args.checkpoint_every_steps,
                                   fresh=args.fresh, force=args.force,
                                   dist_timeout=args.dist_timeout,
                                   keep_particles=args.keep_particles,
                                   stop_signals=args.stop_signals)
    except swamp_ext.TrainingDivergedError as e:
        print(f"swamp-ext: error: {e}\n{len(e.rounds)} completed round(s) kept"
              + (f" in {args.out}" if args.out else ""), file=sys.stderr)
        return 3
    finally:
        if board is not None:
            board.close()
    if args.out and primary:
        result.save(args.out)
        print(f"wrote {os.path.join(args.out, 'results.json')} and "
              f"{os.path.join(args.out, 'model.safetensors')}")
    return 0


def _run_data(result: Any, args: argparse.Namespace) -> Any:
    """The data a run was trained on: --dataset / --data-root, else the run's built-in set."""
    import swamp_ext

    name = args.dataset or result.dataset
    try:
        return swamp_ext.datasets.load(name, root=args.data_root)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise ValueError(f"cannot load the run's data {name!r} ({e}); give --dataset and "
                         "--data-root") from None


def _save_analysis(run_dir: str, name: str, obj: Any) -> str:
    from .run_folder.write import make_folder, write_json

    folder = os.path.join(run_dir, "analysis")
    path = os.path.join(folder, name)
    make_folder(folder, path)
    write_json(path, obj)
    return path


def _analyze(args: argparse.Namespace) -> None:
    import swamp_ext
    from swamp_ext import analysis

    if args.analysis == "ensemble":
        runs = [swamp_ext.load_run(d) for d in args.run_dir]
        data = _run_data(runs[0], args)
        res = analysis.imp_ensemble(runs, data, args.out)
        print(swamp_ext.report.show(res, args.out))
        print(f"wrote {os.path.join(args.out, 'results.json')}")
        return
    result = swamp_ext.load_run(args.run_dir)
    k = result.rounds[-1].round if args.round is None else args.round
    data = _run_data(result, args)
    if args.analysis == "hessian":
        t = analysis.hessian_trace(result, data, k, train_samples=args.train_samples,
                                   max_samples=args.max_samples, tolerance=args.tolerance,
                                   seed=args.seed)
        rec = result.round(k).record
        print(f"Hessian trace at round {k} ({100 * rec.sparsity:.2f}% sparse, {t.dimension} "
              f"unpruned parameters): {t.trace:.4g} ± {t.std_error:.2g} (standard error, "
              f"{t.samples} vectors{'' if t.converged else ', tolerance not reached'}); "
              f"per parameter {t.per_parameter:.3g}")
        path = _save_analysis(args.run_dir, f"hessian_round{k}.json",
                              {"run": args.run_dir, "round": k, "sparsity": rec.sparsity,
                               **dataclasses.asdict(t)})
        print(f"wrote {path}")
        return
    paths = analysis.barrier(result, data, k, between=args.between, points=args.points,
                             bn={"raw": (False,), "recomputed": (True,),
                                 "both": (False, True)}[args.bn],
                             train_samples=args.train_samples)
    for p in paths:
        print(f"{p.label}: loss barrier train {p.train_loss_barrier:.4f} test "
              f"{p.test_loss_barrier:.4f}; error barrier train "
              f"{100 * p.train_error_barrier:.2f} test {100 * p.test_error_barrier:.2f} points")
        print(f"  {'alpha':>5} {'train loss':>10} {'train acc':>9} {'test loss':>9} "
              f"{'test acc':>8}")
        for i, a in enumerate(p.alpha):
            print(f"  {a:5.2f} {p.train_loss[i]:10.4f} {100 * p.train_acc[i]:8.2f}% "
                  f"{p.test_loss[i]:9.4f} {100 * p.test_acc[i]:7.2f}%")
    path = _save_analysis(args.run_dir, f"barrier_round{k}_{args.between}.json",
                          {"run": f"{result.label} seed {result.config.seed} ({args.run_dir})",
                           "round": k, "between": paths[0].label.rsplit(" (", 1)[0],
                           "paths": [p.to_json() for p in paths]})
    print(f"wrote {path}")


def _report(args: argparse.Namespace) -> int:
    import swamp_ext
    from swamp_ext import report
    from swamp_ext.run_folder.progress import RunNotFinishedError

    if args.command == "show":
        shown = []
        for d in args.run_dir:
            try:
                shown.append(report.show(swamp_ext.load_run(d), d))
            except RunNotFinishedError as e:  # interrupted: where it stands, how to resume
                shown.append(str(e))
        print("\n\n".join(shown))
        return 0
    runs = [swamp_ext.load_run(d) for d in getattr(args, "run_dir", ())] \
        if args.command == "compare" else []
    if args.command == "plot":
        from swamp_ext import plots

        print(f"wrote {plots.plot(args.run_dir, args.output, args.kind, args.title)}")
    elif args.command == "export":
        from swamp_ext import export

        res = swamp_ext.load_run(args.run_dir)
        e = export.export(res, args.output, args.format, args.round)
        print(f"wrote {e.path} ({args.format}): {e.bytes} bytes, dense tensors "
              f"{e.dense_bytes} bytes ({100 * e.ratio:.1f}%)")
    elif args.command == "analyze" and args.analysis != "overlap":
        _analyze(args)
    elif args.command == "analyze":
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
    else:
        at = None if args.at is None else [a / 100 for a in args.at]
        print(report.compare(runs, at, markdown=args.markdown, metric=args.metric))
    return 0


def _signal_list(text: str) -> tuple:
    from .stopping import resolve_signals

    names = [t for t in text.replace(" ", "").split(",") if t]
    if names in ([], ["none"]):
        return ()
    try:
        return resolve_signals(names, "--stop-signals")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_debug(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the traceback of an error (otherwise one line)")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (the CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(prog="swamp-ext", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cmake-prefix-path", action="store_true",
        help="print the folder to put in CMAKE_PREFIX_PATH for find_package(swamp_core)")
    parser.add_argument("--version", action="store_true", help="print the version")
    _add_debug(parser, False)
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
    run.add_argument("--checkpoint-every-steps", type=int, default=0,
                     help="also every N training steps (0: never): for long epochs; a resume "
                          "continues mid-epoch")
    run.add_argument("--stop-signals", default="SIGTERM,SIGUSR1", type=_signal_list,
                     help="signals that save at the next step and stop with exit status 75 "
                          "(comma-separated; 'none': none; default SIGTERM,SIGUSR1)")
    run.add_argument("--fresh", action="store_true",
                     help="ignore an existing checkpoint in --out and start over")
    run.add_argument("--force", action="store_true",
                     help="take --out over from a lock naming another machine (only when that "
                          "run is gone: one writer per folder)")
    run.add_argument("--dist-timeout", type=float, default=1800.0,
                     help="under torchrun: seconds a process waits for the others before the run "
                          "stops with an error (default 1800)")
    run.add_argument("--keep-particles", action="store_true",
                     help="keep every round's particles too (for `analyze barrier --between "
                          "particles`)")
    run.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="write every round's figures as TensorBoard scalars to DIR")
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
                      help="sparsities in percent (default: 50 80 90 95 98 99 when the runs "
                           "reached each, else the sparsities they reached)")
    comp.add_argument("--markdown", action="store_true", help="a Markdown table")
    comp.add_argument("--metric", choices=("acc", "ece", "nll"), default="acc",
                      help="test accuracy (default), calibration error or NLL")
    ana = sub.add_parser("analyze", help="analyses of kept rounds")
    kinds = ana.add_subparsers(dest="analysis", required=True)
    ov = kinds.add_parser("overlap", help="IoU of two runs' masks at a round, per layer")
    ov.add_argument("run_a", help="a run folder")
    ov.add_argument("run_b", help="another run folder of the same model and data")
    ov.add_argument("--round", type=int, default=None, help="default: the last round of both")

    def data_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dataset", default=None, help="the run's data (default: its built-in "
                                                       "dataset)")
        q.add_argument("--data-root", default=None, help="folder of a dataset read from disk")

    ba = kinds.add_parser("barrier", help="loss / accuracy along the line between two solutions "
                                          "and the barrier")
    ba.add_argument("run_dir", help="a run folder")
    ba.add_argument("--round", type=int, default=None, help="default: the last round")
    ba.add_argument("--between", choices=("particles", "rounds"), default="particles",
                    help="the round's first two particles (needs --keep-particles) or the round "
                         "and the next")
    ba.add_argument("--points", type=int, default=11,
                    help="evenly spaced points on the line, ends included")
    ba.add_argument("--bn", choices=("raw", "recomputed", "both"), default="both",
                    help="batch-norm statistics interpolated (raw) or recomputed at each point")
    ba.add_argument("--train-samples", type=int, default=0,
                    help="training samples for the train figures (0: all)")
    data_flags(ba)
    he = kinds.add_parser("hessian", help="trace of the training loss's Hessian (Hutchinson)")
    he.add_argument("run_dir", help="a run folder")
    he.add_argument("--round", type=int, default=None, help="default: the last round")
    he.add_argument("--train-samples", type=int, default=1000,
                    help="the first n training samples define the loss")
    he.add_argument("--max-samples", type=int, default=200,
                    help="at most this many Rademacher vectors")
    he.add_argument("--tolerance", type=float, default=0.05,
                    help="stop at a standard error of this fraction of the trace")
    he.add_argument("--seed", type=int, default=0, help="seed of the Rademacher vectors")
    data_flags(he)
    en = kinds.add_parser("ensemble", help="the imp_ensemble baseline: the prediction ensemble "
                                           "of independent runs, round by round")
    en.add_argument("run_dir", nargs="+", help="runs differing only in the seed")
    en.add_argument("--out", required=True, help="folder for its results.json")
    data_flags(en)
    pl = sub.add_parser("plot", help="accuracy against sparsity, layer densities or barrier "
                                     "curves (matplotlib)")
    pl.add_argument("run_dir", nargs="+", help="run folders (seeds of a method form a band)")
    pl.add_argument("-o", "--output", required=True, help="image file (png, pdf, svg)")
    pl.add_argument("--kind", choices=("accuracy", "layers", "barrier"), default="accuracy",
                    help="accuracy against remaining weights, per-layer density by round, or "
                         "saved barrier curves")
    pl.add_argument("--title", default="", help="title above the plot")
    ex = sub.add_parser("export", help="a round's model as safetensors, torch, onnx or CSR")
    ex.add_argument("run_dir", help="a run folder")
    ex.add_argument("-o", "--output", required=True, help="file to write")
    ex.add_argument("--format", choices=("safetensors", "torch", "onnx", "csr"),
                    default="safetensors", help="file format (csr: pruned weights in compressed "
                                                "sparse rows)")
    ex.add_argument("--round", type=int, default=None, help="default: the last round")
    # --debug after the command too (swamp-ext run ... --debug)
    for p in list(sub.choices.values()) + list(kinds.choices.values()):
        _add_debug(p, argparse.SUPPRESS)
    return parser


# Exit statuses (docs/guides/runs.md): 0 done; 1 a failure of the machine or the files (disk
# full, permissions, a process of the group died); 2 what was asked cannot be done (a bad flag,
# configuration, file or folder); 3 training diverged; 75 stopped by a signal after saving
# (EX_TEMPFAIL: run the same command to resume); 130 Ctrl-C, after saving.
EXIT_FAILURE, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SWAMP_EXT_DEBUG") == "1"
    try:
        return _main(parser, args)
    except BaseException as e:  # noqa: BLE001 - every expected error becomes one line
        status = _exit_status(e)
        if status is None or debug:
            raise
        print(f"swamp-ext: error: {_one_line(e)}", file=sys.stderr)
        return status


def _exit_status(e: BaseException) -> Optional[int]:
    """The exit status of an expected error; None: a bug (its traceback is shown)."""
    from .errors import RunStopped
    from .run_folder.lock import FolderInUseError

    if isinstance(e, RunStopped):
        return e.code
    if isinstance(e, FolderInUseError):
        return EXIT_USAGE
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return EXIT_USAGE  # a run folder or file that is not there / not one
    if isinstance(e, OSError):
        return EXIT_FAILURE  # disk full, permissions, ...
    if isinstance(e, (ValueError, TypeError, IndexError, ImportError)):
        return EXIT_USAGE
    if isinstance(e, RuntimeError):
        return EXIT_FAILURE  # a corrupt checkpoint, a process of the group died or hangs
    return None


def _one_line(e: BaseException) -> str:
    """The error on one line; where it may be a bug rather than the input, the way to see more."""
    from .errors import RunStopped

    text = " ".join(str(e).split("\n")) if str(e) else type(e).__name__
    plain = isinstance(e, (OSError, ValueError, RunStopped))
    return text if plain else text + " (--debug for the traceback)"


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
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
    if args.command in ("show", "compare", "analyze", "plot", "export"):
        return _report(args)
    if args.command == "run":
        from . import distributed

        # the library's own warning of a stop is the CLI's error line here
        logging.getLogger("swamp_ext").addHandler(logging.NullHandler())
        try:
            return _run(args)
        except KeyboardInterrupt:
            print("\nswamp-ext: interrupted" + (
                f"; progress saved in {args.out}, run the same command to resume"
                if args.out else ""), file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            distributed.leave()
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
