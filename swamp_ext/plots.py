"""Pictures of runs (``swamp-ext plot``), with matplotlib (``pip install 'swamp_ext[plot]'``).

* ``accuracy``: test accuracy against the remaining weights on a log axis (sparsity grows to
  the right), one line per method, the mean over seeds with the seeds' spread as a band.
* ``layers``: per-layer density round by round (one panel per method, its first run).
* ``barrier``: loss and accuracy along the linear paths saved by ``swamp-ext analyze barrier``.
"""

from __future__ import annotations

import glob
import math
import os
import statistics
from typing import Any, Sequence, Union

from . import report
from .run_folder.write import make_folder

KINDS = ("accuracy", "layers", "barrier")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'swamp_ext[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _setup_title(results: Sequence[Any]) -> str:
    setups = sorted({(r.model, r.dataset) for r in results})
    return "; ".join(f"{m} on {d}" for m, d in setups)


def _remaining_axis(ax: Any, lowest: float) -> None:
    """x: remaining weights (%) on a log axis, decreasing to the right, with sparsity labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
             if t >= lowest * 0.8]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_xlim(110, lowest * 0.8)
    ax.set_xlabel("remaining weights (log scale; sparsity grows to the right)")
    top = ax.secondary_xaxis("top", functions=(lambda v: v, lambda v: v))
    top.set_xscale("log")
    top.xaxis.set_major_locator(FixedLocator(ticks))
    top.xaxis.set_minor_locator(NullLocator())
    top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 - v:g}"))
    top.set_xlabel("sparsity (%)")


def _is_control(g: Any) -> bool:
    return g.method.endswith("/random")


def accuracy(results: Sequence[Any], ax: Any, controls: bool = True) -> None:
    """One line per method; ``controls=False`` leaves the random-pruning control out (its
    collapse would squeeze the others' differences into a few pixels)."""
    lowest = 100.0
    for g in report.group(results):
        if not controls and _is_control(g):
            ax.plot([], [])  # keep the colours of the full panel
            continue
        by_round: dict[int, list[tuple[float, float]]] = {}
        for r in g.runs:
            for rec in r.rounds:
                by_round.setdefault(rec.round, []).append((1 - rec.sparsity, rec.test_acc))
        ks = sorted(by_round)
        x = [100 * statistics.fmean(p[0] for p in by_round[k]) for k in ks]
        ys = [[100 * p[1] for p in by_round[k]] for k in ks]
        mean = [statistics.fmean(y) for y in ys]
        lowest = min(lowest, min(x))
        n = len(g.runs)
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=f"{g.label} ({n} seed"
                          f"{'s' if n > 1 else ''})")
        if n > 1:
            sd = [statistics.stdev(y) if len(y) > 1 else 0.0 for y in ys]
            ax.fill_between(x, [m - s for m, s in zip(mean, sd)],
                            [m + s for m, s in zip(mean, sd)], color=line.get_color(), alpha=0.2)
    _remaining_axis(ax, lowest)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")


def layers(results: Sequence[Any], fig: Any) -> None:
    """Draws every prunable layer's density by round onto ``fig``."""
    groups = report.group(results)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, g in zip(axes, groups):
        r = g.runs[0]
        names = list(r.rounds[0].layer_density)
        x = [100 * (1 - rec.sparsity) for rec in r.rounds]
        for name in names:
            ax.plot(x, [100 * rec.layer_density.get(name, math.nan) for rec in r.rounds],
                    marker=".", label=name)
        _remaining_axis(ax, min(x))
        ax.set_yscale("log")
        ax.set_ylabel("layer density (%)")
        ax.set_title(f"{g.label} (seed {r.config.seed})", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")


def barrier_files(run_dirs: Sequence[str]) -> list[str]:
    """The saved barrier analyses (``analysis/barrier_*.json``) of the run folders."""
    out = []
    for d in run_dirs:
        out += sorted(glob.glob(os.path.join(d, "analysis", "barrier_*.json")))
    return out


def barrier(files: Sequence[str], fig: Any) -> None:
    """Draws saved barrier paths (test loss along the line) onto ``fig``."""
    from .analysis import Path
    from .run_folder import strict

    if not files:
        raise ValueError("no barrier analyses in these runs: run `swamp-ext analyze barrier "
                         "RUN_DIR --round K` first")
    axes = fig.subplots(1, len(files), squeeze=False)[0]
    for ax, f in zip(axes, files):
        saved = strict.read_json(f, allow_nan=True)
        try:
            paths = [Path.from_json(d) for d in saved["paths"]]
            run, between = str(saved["run"]), str(saved["between"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{f} is not a barrier analysis: {type(e).__name__}: {e}") from None
        for p in paths:
            kind = ("BN recomputed" if p.recompute_bn else
                    "no batch norm" if p.label.endswith("(no batch norm)") else "raw")
            if not all(math.isnan(v) for v in p.test_loss):
                ax.plot(p.alpha, p.test_loss, marker="o", ms=3, label=f"test, {kind}")
            if not all(math.isnan(v) for v in p.train_loss):
                ax.plot(p.alpha, p.train_loss, ls="--", label=f"train, {kind}")
        ax.set_xlabel("alpha: (1 - alpha) a + alpha b")
        ax.set_ylabel("loss (cross-entropy)")
        ax.set_title(f"{run}\n{between}", fontsize="small")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")


def plot(run_dirs: Sequence[Union[str, os.PathLike]], out: Union[str, os.PathLike],
         kind: str = "accuracy", title: str = "") -> str:
    """Draws ``kind`` (accuracy | layers | barrier) for the run folders into ``out`` (png, pdf,
    svg: by its extension). Returns the path written."""
    from .run_folder import load_run

    if kind not in KINDS:
        raise ValueError(f"plot: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not run_dirs:
        raise ValueError("plot: no run folders given")
    plt = _pyplot()
    dirs = [os.fspath(d) for d in run_dirs]
    results = [load_run(d) for d in dirs]
    what = {"accuracy": "test accuracy against sparsity", "layers": "layer densities",
            "barrier": "linear paths between solutions"}[kind]
    if kind == "accuracy":
        groups = report.group(results)
        if any(_is_control(g) for g in groups) and not all(_is_control(g) for g in groups):
            fig, (ax, zoom) = plt.subplots(1, 2, figsize=(15, 5.5), constrained_layout=True)
            accuracy(results, ax)
            accuracy(results, zoom, controls=False)
            ax.set_title("all methods", fontsize="medium")
            zoom.set_title("without the random-pruning control (zoomed)", fontsize="medium")
        else:
            fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
            accuracy(results, ax)
    elif kind == "layers":
        n = len(report.group(results))
        fig = plt.figure(figsize=(5.5 * n, 4.5), constrained_layout=True)
        layers(results, fig)
    else:
        files = barrier_files(dirs)
        fig = plt.figure(figsize=(5.5 * max(1, len(files)), 4.5), constrained_layout=True)
        barrier(files, fig)
    fig.suptitle(title or f"{_setup_title(results)}: {what}")
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    make_folder(folder, out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
