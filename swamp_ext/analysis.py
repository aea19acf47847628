"""Analyses of what pruning found (the SWAMP paper's arguments), computed in the C++ core.

* ``linear_path(result, data, a, b)``: loss and accuracy along the straight line between two
  solutions (raw, or with batch-norm statistics recomputed at every point), on the training and
  test sets, and the barrier above the line between the ends (``swamp-ext analyze barrier``).
  ``barrier(result, data, round=k, between="particles" | "rounds")`` picks the solutions.
* ``hessian_trace(result, data, round=k)``: flatness, the trace of the training loss's Hessian
  over the unpruned weights by Hutchinson's estimator, with its standard error
  (``swamp-ext analyze hessian``).
* ``ensemble_scores(result, data, states)`` and ``imp_ensemble(runs, data, out)``: the
  prediction ensemble of the round-k models of independent runs, the ``imp_ensemble`` baseline
  (``swamp-ext analyze ensemble``), written as a run folder that ``compare`` and ``plot`` read.
* ``mask_overlap(a, b)``: intersection over union of two runs' kept weights at equal sparsity,
  per layer and overall (``swamp-ext analyze overlap RUN_A RUN_B --round K``).

``result`` is a ``Result`` (``run_imp`` or ``load_run``): it says which model and config;
``data`` is the run's data (``datasets.load`` / ``from_torch``), read without augmentation.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from ._core import _C

__all__ = ["Overlap", "Path", "Trace", "barrier", "ensemble_scores", "hessian_trace",
           "imp_ensemble", "linear_path", "mask_overlap"]


def _feeder_and_tensors(data: Any, device: str) -> tuple[Optional[Any], tuple]:
    """What the core takes for ``data``: a TorchData's feeder (to start before the core's
    threads; None for tensors) and the four data tensors (empty for a feeder)."""
    from .pipeline import TorchData

    if isinstance(data, TorchData):
        empty = torch.empty(0)
        return data.feeder(device), (empty, empty.long(), empty, empty.long())
    return None, (data.x_train, data.y_train, data.x_test, data.y_test)


# ---- setup ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _setup(result: Any, data: Any, device: Optional[str] = None) -> Iterator[Any]:
    """The core's view of a run's model and data (a TorchData's loader running meanwhile)."""
    from .datasets import Dataset
    from .pipeline import TorchData
    from .results import Result

    if not isinstance(result, Result):
        raise TypeError(f"expected a swamp_ext Result (run_imp / load_run), got "
                        f"{type(result).__name__}")
    if not isinstance(data, (Dataset, TorchData)):
        raise TypeError("data must be the run's data: a swamp_ext.datasets.Dataset or "
                        f"datasets.from_torch(...), got {type(data).__name__}")
    if result._identity is not None and result._adapter is None:
        raise ValueError("this run pruned your own module: load_run(DIR, model=module) "
                         "rebuilds it for analyses")
    if result.input_shape and tuple(data.input_shape) != tuple(result.input_shape):
        raise ValueError(f"data: {data.name} has inputs {tuple(data.input_shape)}, the run was "
                         f"trained on {tuple(result.input_shape)} ({result.dataset})")
    if result.num_classes and data.num_classes != result.num_classes:
        raise ValueError(f"data: {data.name} has {data.num_classes} classes, the run had "
                         f"{result.num_classes} ({result.dataset})")
    cfg = result.config.to_cpp()
    if device is not None:
        cfg.device = device
    feeder, tensors = _feeder_and_tensors(data, cfg.device)
    try:
        if feeder is not None:
            feeder.start()
        yield _C.analysis.Setup(cfg, *tensors, data.num_classes, list(data.mean or ()),
                                list(data.std or ()), result._adapter, feeder)
    finally:
        if feeder is not None:
            feeder.close()


# ---- linear mode connectivity -----------------------------------------------------------------
@dataclass(frozen=True)
class Path:
    """Figures along (1 - alpha) a + alpha b; barriers = the largest excess above the straight
    line between the ends (loss, and error = 1 - accuracy); NaN where not computed."""

    alpha: list[float]
    train_loss: list[float]
    train_acc: list[float]
    test_loss: list[float]
    test_acc: list[float]
    train_loss_barrier: float
    train_error_barrier: float
    test_loss_barrier: float
    test_error_barrier: float
    recompute_bn: bool = False
    label: str = ""

    @classmethod
    def _from_cpp(cls, p: Any, recompute_bn: bool, label: str) -> Path:
        pts = p.points
        return cls([q.alpha for q in pts], [q.train_loss for q in pts],
                   [q.train_acc for q in pts], [q.test_loss for q in pts],
                   [q.test_acc for q in pts], p.train_loss_barrier, p.train_error_barrier,
                   p.test_loss_barrier, p.test_error_barrier, recompute_bn, label)

    def to_json(self) -> dict[str, Any]:
        """The path as JSON-ready dict (what ``analysis/barrier_*.json`` holds)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else
                    [None if math.isnan(x) else x for x in v] if isinstance(v, list) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Path:
        """A Path back from ``to_json``'s dict."""
        nan = float("nan")
        fix = {k: (nan if v is None else [nan if x is None else x for x in v]
                   if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**fix)


def linear_path(result: Any, data: Any, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                *, points: int = 11, recompute_bn: bool = False, train: bool = True,
                test: bool = True, train_samples: int = 0, label: str = "",
                device: Optional[str] = None) -> Path:
    """Loss and accuracy of the models (1 - alpha) a + alpha b at ``points`` evenly spaced
    alphas; ``recompute_bn``: batch-norm statistics recomputed at every point (else interpolated
    with the weights). ``a`` / ``b``: state dicts of the run's model (``result.round(k).state``,
    ``.particles[i]``). ``train_samples``: the first this many training samples (0: all)."""
    with _setup(result, data, device) as s:
        p = _C.analysis.linear_path(s, a, b, points=points, recompute_bn=recompute_bn,
                                    train=train, test=test, train_samples=train_samples)
    return Path._from_cpp(p, recompute_bn, label)


def _pairs(result: Any, round: int, between: str) -> list[tuple[str, dict, dict]]:
    if between == "particles":
        r = result.round(round)
        if len(r.particles) < 2:
            why = ("it trained one particle" if r.record.particles < 2 else
                   "its particles were not kept (run with keep_particles=True / "
                   "--keep-particles)")
            raise ValueError(f"round {round} has no two particles to connect: {why}")
        return [(f"round {round}: particle 0 - particle 1", r.particles[0], r.particles[1])]
    if between == "rounds":
        nxt = round + 1
        if not any(x.round == nxt for x in result.rounds):
            raise ValueError(f"round {round} has no successor in this run (rounds "
                             f"{[x.round for x in result.rounds]})")
        return [(f"round {round} - round {nxt}", result.round(round).state,
                 result.round(nxt).state)]
    raise ValueError(f"between must be 'particles' or 'rounds', got {between!r}")


def barrier(result: Any, data: Any, round: int, *, between: str = "particles",
            points: int = 11, bn: Sequence[bool] = (False, True), train: bool = True,
            test: bool = True, train_samples: int = 0,
            device: Optional[str] = None) -> list[Path]:
    """Linear paths of round ``round``: between its first two particles' solutions (needs
    ``keep_particles=True``) or from its averaged model to the next round's; raw and with
    batch-norm statistics recomputed (``bn``). A model without batch norm gets one path
    (labelled so: raw and recomputed are the same)."""
    out = []
    for label, a, b in _pairs(result, round, between):
        if not any(k.endswith("running_var") for k in a):
            out.append(linear_path(result, data, a, b, points=points, train=train, test=test,
                                   train_samples=train_samples, device=device,
                                   label=label + " (no batch norm)"))
            continue
        for recompute in bn:
            out.append(linear_path(result, data, a, b, points=points, recompute_bn=recompute,
                                   train=train, test=test, train_samples=train_samples,
                                   device=device,
                                   label=label + (" (BN recomputed)" if recompute else " (raw)")))
    return out


# ---- flatness ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trace:
    """Hutchinson's estimate of tr(H) over ``dimension`` unpruned parameters."""

    trace: float
    std_error: float
    samples: int
    converged: bool
    dimension: int

    @property
    def per_parameter(self) -> float:
        """The trace divided by the number of parameters it is over."""
        return self.trace / self.dimension if self.dimension else float("nan")


def hessian_trace(result: Any, data: Any, round: Optional[int] = None, *,
                  state: Optional[dict[str, torch.Tensor]] = None,
                  masks: Optional[dict[str, torch.Tensor]] = None, train_samples: int = 1000,
                  min_samples: int = 10, max_samples: int = 200, tolerance: float = 0.05,
                  seed: int = 0, device: Optional[str] = None) -> Trace:
    """Trace of the Hessian of the mean training loss (first ``train_samples`` samples, eval
    mode) at round ``round``'s averaged model (or ``state`` under ``masks``), over its unpruned
    weights: Rademacher vectors until the standard error is at most ``tolerance`` x ``|trace|``
    (at least ``min_samples``, at most ``max_samples``)."""
    if state is None:
        if round is None:
            raise ValueError("hessian_trace: give round= or state=")
        r = result.round(round)
        state, masks = r.state, r.masks
    with _setup(result, data, device) as s:
        t = _C.analysis.hessian_trace(s, state, masks or {}, train_samples=train_samples,
                                      min_samples=min_samples, max_samples=max_samples,
                                      tolerance=tolerance, seed=seed)
    return Trace(t.trace, t.std_error, t.samples, t.converged, t.dimension)


# ---- ensembles --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    acc: float
    nll: float
    ece: float


def ensemble_scores(result: Any, data: Any, states: Sequence[dict[str, torch.Tensor]],
                    device: Optional[str] = None) -> tuple[list[Scores], Scores]:
    """Test figures of each state (of ``result``'s model) and of their prediction ensemble."""
    with _setup(result, data, device) as s:
        e = _C.analysis.ensemble_scores(s, list(states))
    return ([Scores(m.acc, m.nll, m.ece) for m in e.members],
            Scores(e.ensemble.acc, e.ensemble.nll, e.ensemble.ece))


def imp_ensemble(runs: Sequence[Any], data: Any, out_dir: Union[str, os.PathLike, None] = None,
                 device: Optional[str] = None) -> Any:
    """The ``imp_ensemble`` baseline: round by round, the prediction ensemble of the averaged
    models of independent runs of one setup (usually IMP with different seeds; the rounds have
    equal sparsity). Returns a Result whose records hold the ensemble's figures (``particles``:
    the number of members, ``particle_acc``: theirs); with ``out_dir`` also written as a run
    folder (results.json) that ``swamp-ext compare`` / ``plot`` read as ``imp_ensemble(N)``."""
    from .report import setup_of
    from .results import Result, RoundRecord
    from .run_folder import results_json as _results_json
    from .run_folder import write_json

    runs = list(runs)
    if len(runs) < 2:
        raise ValueError("imp_ensemble: needs at least two runs")
    first = runs[0]
    base = setup_of(first.config)
    for r in runs[1:]:
        other = setup_of(r.config)
        diff = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
        if diff or r.model != first.model or r.dataset != first.dataset:
            raise ValueError("imp_ensemble: the runs must differ in the seed only; they differ "
                             f"in {diff or ['model / dataset']}")
    seeds = [r.config.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"imp_ensemble: two runs share a seed ({seeds}): not independent")
    rounds = sorted(set.intersection(*({x.round for x in r.rounds} for r in runs)))
    records = []
    for k in rounds:
        recs = [next(x for x in r.rounds if x.round == k) for r in runs]
        members, ens = ensemble_scores(first, data, [r.round(k).state for r in runs], device)
        records.append(RoundRecord(
            round=k, particles=len(runs), sparsity=recs[0].sparsity,
            sparsity_all=recs[0].sparsity_all, remaining=recs[0].remaining,
            prunable=recs[0].prunable, test_acc=ens.acc, test_nll=ens.nll,
            ensemble_acc=ens.acc, ensemble_nll=ens.nll, particle_acc=[m.acc for m in members],
            particle_nll=[m.nll for m in members], layer_density=dict(recs[0].layer_density),
            train_loss=sum(x.train_loss for x in recs) / len(recs),
            seconds=sum(x.seconds for x in recs), test_ece=ens.ece, ensemble_ece=ens.ece))
    res = Result(config=first.config, dataset=first.dataset, rounds=records, masks={},
                 _state={}, input_shape=first.input_shape, num_classes=first.num_classes,
                 _adapter=first._adapter, _identity=first._identity,
                 ensemble_of=[r._run_dir or f"seed {r.config.seed}" for r in runs])
    if out_dir is not None:
        out = os.fspath(out_dir)
        _C.ensure_writable_dir(out, "imp_ensemble output folder")
        saved = _results_json(first.config, first.dataset, records, first._adapter,
                              first.input_shape, first.num_classes)
        if first._identity is not None and first._adapter is None:
            saved["config"]["model"] = first._identity
            saved["module"] = {"identity": first._identity}
        saved["ensemble_of"] = res.ensemble_of
        write_json(os.path.join(out, "results.json"), saved)
        res._run_dir = out
    return res


# ---- masks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overlap:
    """IoU of two masks' kept weights (``kept_a``, ``kept_b`` of ``total``)."""

    iou: float
    intersection: int
    union: int
    kept_a: int
    kept_b: int
    total: int


def _masks(x: Any) -> dict[str, torch.Tensor]:
    if isinstance(x, dict):
        return x
    masks = getattr(x, "masks", None)  # a RoundModel or a Result (its final masks)
    if isinstance(masks, dict):
        return masks
    raise TypeError("expected masks by parameter name, a Result or a round, got "
                    f"{type(x).__name__}")


def mask_overlap(a: Union[dict, Any], b: Union[dict, Any]) -> dict[str, Overlap]:
    """Per parameter and overall (key ``""``): IoU of two mask sets of the same parameters
    (dicts of bool tensors, ``result.round(k)`` or Results). Compare masks of equal sparsity
    (the same round of runs with the same prune ratio): IoU is 1 for identical masks and about
    d / (2 - d) for independent random masks of density d."""
    out = _C.analysis.mask_overlap(_masks(a), _masks(b))
    return {k: Overlap(v.iou, v.intersection, v.union, v.kept_a, v.kept_b, v.total)
            for k, v in out.items()}


