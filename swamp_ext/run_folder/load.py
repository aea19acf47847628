"""load_run: the Result of a run folder, every field of its results.json checked first."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Union

import torch

from ..config import Config
from ..modules import _ModuleAdapter

if TYPE_CHECKING:
    from ..results import Result


def load_run(run_dir: Union[str, os.PathLike],
             model: Optional[torch.nn.Module] = None) -> Result:
    """The Result of a run folder (``run_imp(..., checkpoint_dir=DIR)``, ``swamp-ext run --out
    DIR``): config, every round's record, and with ``result.round(k)`` the kept round's masks
    and averaged model. A run that pruned your own module needs it back (``model=``) for
    ``to_torch``."""
    from ..results import Result, RoundRecord
    from . import strict

    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, "results.json")
    if not os.path.isdir(run_dir) or not os.path.lexists(path):
        _refuse_unfinished(run_dir)
        raise FileNotFoundError(f"{run_dir}: not a swamp_ext run folder (no results.json)")
    # a regular file of bounded size, every field checked; one ValueError naming the field
    saved = strict.check_results(strict.read_json(path), path)
    cfg = dict(saved["config"])
    rounds = [RoundRecord(**r) for r in saved["rounds"]]
    if not rounds:
        _refuse_unfinished(run_dir)
        raise ValueError(f"{path} holds no finished round")
    module_run = "module" in saved
    adapter, identity = None, None
    if module_run:
        identity = cfg.pop("model")
        cfg["model"] = Config().model  # the zoo field is not used by a module run
        if model is not None:
            adapter = _ModuleAdapter(model, device="cpu", prunable=None, loss_fn=None)
            if adapter.identity != identity:
                raise ValueError(f"{run_dir} pruned {identity}, the module given is "
                                 f"{adapter.identity}")
    elif model is not None:
        raise ValueError(f"{run_dir} pruned the zoo model {cfg.get('model')!r}; model= is for "
                         "runs of your own module")
    try:
        config = Config.from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: config: {e}") from None
    res = Result(config=config, dataset=saved.get("dataset", ""), rounds=rounds, masks={},
                 _state={}, input_shape=tuple(saved.get("input_shape", ())),
                 num_classes=int(saved.get("num_classes", 0)), _adapter=adapter,
                 _run_dir=run_dir, _identity=identity,
                 ensemble_of=[str(x) for x in saved.get("ensemble_of", [])],
                 channels_last=saved.get("channels_last"))
    if res.ensemble_of:  # the imp_ensemble baseline: figures only
        return res
    last = res.round(rounds[-1].round)  # the final model is the last round's average
    res.masks, res._state = last.masks, last.state
    return res


def _refuse_unfinished(run_dir: str) -> None:
    """Raises RunNotFinishedError when ``run_dir`` holds a checkpoint (an interrupted run)."""
    from .progress import RunNotFinishedError, checkpoint_progress, how_to_resume

    try:
        prog = checkpoint_progress(run_dir)
    except (OSError, ValueError, RuntimeError) as e:
        raise FileNotFoundError(f"{run_dir}: no finished round, and its checkpoint cannot be "
                                f"read ({e})") from None
    if prog is not None:
        raise RunNotFinishedError(
            f"{run_dir}: no finished round yet ({prog.describe()}); {how_to_resume(run_dir)}",
            prog)
