"""What people read after a run: ``swamp-ext show RUN_DIR`` (a run at a glance) and
``swamp-ext compare RUN_DIR ...`` (accuracy at chosen sparsities, method by method, against IMP,
with the spread over seeds)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

DEFAULT_AT = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
MAX_COLUMNS = 10


def _pct(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def best_within(result: Any, points: float = 0.01) -> Optional[Any]:
    """The sparsest round whose accuracy is within `points` (a fraction) of the dense round's."""
    dense = next((r for r in result.rounds if r.sparsity == 0.0), None)
    if dense is None:
        return None
    ok = [r for r in result.rounds if r.test_acc >= dense.test_acc - points]
    return max(ok, key=lambda r: r.sparsity)


def show(result: Any, where: str = "") -> str:
    """A run at a glance: what ran, every round, the sparsest round within 1 point of dense."""
    c = result.config
    lines = [f"{where or 'run'}: {result.label} on {result.dataset} with {result.model}, "
             f"{c.particles} particles, {c.epochs} epochs/round, prune {100 * c.prune_ratio:g}% "
             f"a round, seed {c.seed}",
             f"{'round':>5} {'parts':>5} {'sparsity':>9} {'acc':>8} {'ens acc':>8} {'nll':>7} "
             f"{'ece':>7} {'seconds':>8}"]
    for r in result.rounds:
        ens = _pct(r.ensemble_acc) if r.particles > 1 else "—"
        ece = "—" if r.test_ece is None else f"{r.test_ece:.4f}"
        lines.append(f"{r.round:5d} {r.particles:5d} {_pct(r.sparsity):>9} "
                     f"{_pct(r.test_acc):>8} {ens:>8} {r.test_nll:7.4f} {ece:>7} "
                     f"{r.seconds:8.1f}")
    best = best_within(result)
    if best is None:
        lines.append("no dense round (sparsity 0) to compare with")
    else:
        lines.append(f"sparsest within 1 point of dense: {_pct(best.sparsity)} (round "
                     f"{best.round}, accuracy {_pct(best.test_acc)})")
    run_dir = getattr(result, "_run_dir", None)
    return "\n".join(lines + _in_progress(run_dir) + _saved_analyses(run_dir))


def _in_progress(run_dir: Optional[str]) -> list[str]:
    """A line when the folder's checkpoint is ahead of its finished rounds (interrupted, or
    still running)."""
    from .run_folder.progress import checkpoint_progress, how_to_resume

    if not run_dir:
        return []
    try:
        prog = checkpoint_progress(run_dir)
    except (OSError, ValueError, RuntimeError) as e:
        return [f"its checkpoint cannot be read: {e}"]
    if prog is None or prog.finished:
        return []
    return [f"in progress: {prog.describe()}; {how_to_resume(run_dir)}"]


def _saved_analyses(run_dir: Optional[str]) -> list[str]:
    """One line per analysis saved in the run folder (swamp-ext analyze)."""
    import glob
    import os

    from .run_folder import strict

    if not run_dir:
        return []
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "analysis", "*.json"))):
        try:
            a = strict.read_json(path, allow_nan=True)
            if "paths" in a:
                out += [f"  barrier, {p['label']}: test loss {p['test_loss_barrier']:.4g}"
                        for p in a["paths"] if p.get("test_loss_barrier") is not None]
            elif "trace" in a:
                out.append(f"  Hessian trace at round {a['round']}: {a['trace']:.4g} ± "
                           f"{a['std_error']:.2g}")
        except (OSError, ValueError, KeyError, TypeError):
            out.append(f"  {os.path.basename(path)}: unreadable")
    return ["saved analyses:"] + out if out else []


METRICS = {"acc": ("test_acc", "test accuracy (%)", 100.0),
           "ece": ("test_ece", "calibration error ECE (%, 15 bins; lower is better)", 100.0),
           "nll": ("test_nll", "test NLL (lower is better)", 1.0)}


def _off(r: Any, s: float) -> float:
    """How far a round is from sparsity s: |log| of the ratio of their remaining weights."""
    return abs(math.log(max(1.0 - r.sparsity, 1e-12) / (1.0 - s)))


def value_at(result: Any, s: float, metric: str = "acc", tol: float = 0.15) -> Optional[float]:
    """The metric (acc, ece, nll) of the round nearest to sparsity `s` by remaining weights
    (None when the nearest keeps more than 1 + `tol` times or less than 1 / (1 + `tol`) times
    the weights `s` would: 48.8% stands for 50%, 98.2% for 98%, not 87.5% for 90%; or when the
    round lacks the metric)."""
    near = min(result.rounds, key=lambda r: _off(r, s))
    return getattr(near, METRICS[metric][0]) if _off(near, s) <= math.log1p(tol) else None


def accuracy_at(result: Any, s: float, tol: float = 0.15) -> Optional[float]:
    """Test accuracy of the round nearest to sparsity `s` (see value_at)."""
    return value_at(result, s, "acc", tol)


# fields that say how a run executes, not what it computes (up to float rounding)
_EXECUTION = ("device", "particle_mode", "sparse_kernels", "sparse_density",
              "sparse_conv_density", "eval_batch_size", "deterministic", "diagnostics",
              "channels_last")


def setup_of(config: Any) -> dict[str, Any]:
    """The config fields that make a setup: all but the seed, how the run executes, and fields
    the method does not use (particles for IMP, single_particle_rounds but for SWAMP+)."""
    d = config.to_dict()
    for k in ("seed",) + _EXECUTION:
        d.pop(k)
    if config.method in ("imp", "imp_swa"):
        d.pop("particles")
    if config.method != "swamp_plus":
        d.pop("single_particle_rounds")
    return d


@dataclass
class Group:
    """Runs of one setup differing only in the seed."""

    label: str
    method: str
    runs: list

    def at(self, s: float, metric: str = "acc") -> tuple[Optional[float], Optional[float], int]:
        """Mean, spread (None for one seed) and count of the runs' ``metric`` near ``s``."""
        accs = [a for a in (value_at(r, s, metric) for r in self.runs) if a is not None]
        if not accs:
            return None, None, 0
        sd = statistics.stdev(accs) if len(accs) > 1 else None
        return statistics.fmean(accs), sd, len(accs)


def group(results: Sequence[Any]) -> list[Group]:
    """Runs with the same config but for the seed (and on the same data and model) together."""
    out: dict[tuple, Group] = {}
    for r in results:
        cfg = setup_of(r.config)
        key = (r.dataset, r.model, tuple(sorted((k, str(v)) for k, v in cfg.items())))
        key += (len(r.ensemble_of),)
        if key not in out:
            method = r.config.method if not r.ensemble_of else f"{r.config.method}_ensemble"
            if r.config.pruning != "global":
                method += f"/{r.config.pruning}"
            out[key] = Group(r.label, method, [])
        out[key].runs.append(r)
    groups = list(out.values())
    labels = [g.label for g in groups]
    for g, label in zip(groups, labels):  # same method, other settings: say which differ
        same = [h for h, other in zip(groups, labels) if other == label]
        if len(same) > 1:
            mine = setup_of(g.runs[0].config)
            diff = sorted({k for h in same if h is not g
                           for k, v in setup_of(h.runs[0].config).items() if mine.get(k) != v})
            g.label += " (" + ", ".join(f"{k}={mine.get(k)}" for k in diff[:3]) + ")"
    return groups


def default_at(results: Sequence[Any], tol: float = 0.15) -> tuple[float, ...]:
    """The sparsities ``compare`` shows when none are given: ``DEFAULT_AT`` (50 80 90 95 98 99%)
    when the runs reached a round near each of them (see `value_at`), else the sparsities the
    runs reached: every round's sparsity but the dense one, rounds within `tol` of each other by
    remaining weights counted once (seeds of one schedule reach the same sparsities), at most
    ``MAX_COLUMNS`` of them spread evenly from the least to the most sparse."""
    rounds = [r for res in results for r in res.rounds]
    if not rounds:
        return DEFAULT_AT
    if all(min(_off(r, s) for r in rounds) <= math.log1p(tol) for s in DEFAULT_AT):
        return DEFAULT_AT
    reached: list[float] = []
    for s in sorted({r.sparsity for r in rounds if 0.0 < r.sparsity < 1.0}):
        if not reached or math.log((1 - reached[-1]) / (1 - s)) > math.log1p(tol):
            reached.append(s)
    if len(reached) > MAX_COLUMNS:
        step = (len(reached) - 1) / (MAX_COLUMNS - 1)
        reached = [reached[round(i * step)] for i in range(MAX_COLUMNS)]
    return tuple(reached) if reached else DEFAULT_AT


def compare(results: Sequence[Any], at: Optional[Sequence[float]] = None,
            markdown: bool = False, metric: str = "acc") -> str:
    """Accuracy (or ``metric``: ece, nll) as mean ± spread over seeds at each sparsity in `at`
    (fractions; None: `default_at` of the runs), per method, and the difference to IMP, marked *
    when it is larger than the seeds' spread (sqrt(sd_method² + sd_imp²)); with one seed the
    spread is unknown (no mark)."""
    if metric not in METRICS:
        raise ValueError(f"compare: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    _, what, scale = METRICS[metric]
    digits = 2 if scale == 100.0 else 4
    if not results:
        raise ValueError("compare: no runs given")
    setups = {(r.dataset, r.model) for r in results}
    if len(setups) > 1:
        raise ValueError("compare: the runs prune different models or data: "
                         + ", ".join(f"{m} on {d}" for d, m in sorted(setups)))
    if at is None:
        at = default_at(results)
    for s in at:
        if not 0 <= s < 1:
            raise ValueError(f"compare: sparsities are fractions in [0, 1), got {s}")
    groups = group(results)
    imp = next((g for g in groups if g.method == "imp"), None)
    head = ["method", "seeds"] + [f"{100 * s:.4g}%" for s in at]
    rows = []
    # per group (by row): its label and (sparsity, difference to IMP) where both have a value
    diffs: dict[int, tuple[str, list[tuple[float, float]]]] = {}
    for g in groups:
        row = [g.label, str(len(g.runs))]
        for s in at:
            m, sd, n = g.at(s, metric)
            if m is None:
                row.append("—")
                continue
            cell = f"{scale * m:.{digits}f}" + (f" ± {scale * sd:.{digits}f}"
                                                 if sd is not None else "")
            if imp is not None and g is not imp:
                im, isd, _ = imp.at(s, metric)
                if im is not None:
                    d = m - im
                    diffs.setdefault(len(rows), (g.label, []))[1].append((s, d))
                    spread = math.hypot(sd, isd) if sd is not None and isd is not None else None
                    mark = "*" if spread is not None and abs(d) > spread else ""
                    cell += f" ({scale * d:+.{digits}f}{mark})"
            row.append(cell)
        rows.append(row)
    # a line per method against IMP: where it is better (higher accuracy; lower ECE / NLL)
    summary = []
    sign = 1.0 if metric == "acc" else -1.0
    for label, ds in diffs.values():
        better = sum(sign * d > 0 for _, d in ds)
        s_last, d_last = ds[-1]
        mean = scale * statistics.fmean(d for _, d in ds)
        summary.append(f"{label} vs {imp.label}: better at {better} of {len(ds)} "
                       f"sparsities, mean {mean:+.{digits}f}; at {100 * s_last:g}%: "
                       f"{scale * d_last:+.{digits}f}")
    d0 = sorted(setups)[0]
    title = (f"{what} at sparsity, {d0[1]} on {d0[0]}; (±: spread over seeds; "
             "(+x): difference to imp, * larger than the spread)")
    if markdown:
        out = [title, "", "| " + " | ".join(head) + " |",
               "|" + "|".join("---" if i < 1 else "---:" for i in range(len(head))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out + [""] + [f"- {x}" for x in summary])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([title, fmt.format(*head)] + [fmt.format(*r) for r in rows] + summary)
