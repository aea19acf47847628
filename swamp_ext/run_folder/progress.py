"""What an interrupted run folder holds: the checkpoint's position (round, particle, epoch,
step), read without resuming it, for ``swamp-ext show`` and ``load_run``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

from .._core import _C

__all__ = ["CheckpointProgress", "RunNotFinishedError", "checkpoint_progress", "how_to_resume"]


class RunNotFinishedError(FileNotFoundError):
    """A run folder with a checkpoint but no finished round yet (a run interrupted, stopped, or
    still running): ``progress`` says where it stands; running the same command resumes it."""

    def __init__(self, message: str, progress: CheckpointProgress) -> None:
        super().__init__(message)
        self.progress = progress


@dataclass(frozen=True)
class CheckpointProgress:
    """Where the run of a folder's ``checkpoint.swamp`` stands."""

    path: str
    model: str
    method: str
    rounds: int                 # configured
    ticket_done: bool
    rounds_done: int
    particles: int              # of the round in progress (0 when every round is done)
    particles_done: int         # of that round, finished
    training: int               # particles in training when it was written (0: none)
    step: Optional[int]         # their training step, counted from the start of a round
    steps_per_epoch: Optional[int]
    total_steps: Optional[int]
    saved_at: float             # the file's modification time (seconds since the epoch)

    @property
    def finished(self) -> bool:
        return self.rounds_done >= self.rounds

    def describe(self) -> str:
        """One line: where the checkpoint stands."""
        if self.finished:
            where = f"all {self.rounds} rounds done"
        elif not self.ticket_done:
            where = "training the ticket (it restarts from its beginning)"
        else:
            where = f"in round {self.rounds_done} (of {self.rounds} rounds), " \
                    f"{self.particles_done} of {self.particles} particle(s) done"
            if self.training:
                first = self.particles_done
                who = f"particle {first}" if self.training == 1 else \
                    f"particles {first}-{first + self.training - 1}"
                where += f", {who} at step {self.step}"
                if self.steps_per_epoch and self.total_steps:
                    epoch, b = divmod(self.step, self.steps_per_epoch)
                    epochs = self.total_steps // self.steps_per_epoch
                    where += f" of {self.total_steps} (epoch {epoch + 1 if b else epoch} of " \
                             f"{epochs}" + (f", step {b} of {self.steps_per_epoch} in it)"
                                            if b else ", at its end)")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        return f"checkpoint of {stamp}: {self.method} on {self.model}, {where}"


def _config_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def checkpoint_progress(run_dir: str) -> Optional[CheckpointProgress]:
    """The position of ``run_dir/checkpoint.swamp``; None when there is none. A damaged file
    raises the reader's error naming it (checksum, truncation)."""
    path = os.path.join(os.fspath(run_dir), "checkpoint.swamp")
    if not os.path.isfile(path):
        return None
    t = _C.io.load_checkpoint_tensors(path)

    def text(key: str) -> str:
        return bytes(t[key].tolist()).decode("utf-8", "replace") if key in t else ""

    def integer(key: str) -> Optional[int]:
        return int(t[key]) if key in t else None

    fields = _config_fields(text("meta/config"))
    try:
        cfg = _C.Config()
        cfg.method = fields.get("method", cfg.method)
        cfg.rounds = int(fields.get("rounds", cfg.rounds))
        cfg.particles = int(fields.get("particles", cfg.particles))
        cfg.single_particle_rounds = int(fields.get("single_particle_rounds",
                                                    cfg.single_particle_rounds))
        per_round = list(_C.particles_per_round(cfg))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its configuration cannot be read ({e})") from None
    rounds_done = integer("meta/rounds_done") or 0
    training = (integer("cur/group") or 0) if "cur/active" in t else 0
    return CheckpointProgress(
        path=path, model=text("meta/model") or fields.get("model", "?"),
        method=cfg.method, rounds=cfg.rounds, ticket_done=bool(integer("meta/ticket_done")),
        rounds_done=rounds_done,
        particles=per_round[rounds_done] if rounds_done < len(per_round) else 0,
        particles_done=integer("meta/particles_done") or 0, training=training,
        step=integer("cur/step") if training else None,
        steps_per_epoch=integer("meta/steps_per_epoch"), total_steps=integer("meta/total_steps"),
        saved_at=os.stat(path).st_mtime)


def how_to_resume(run_dir: str) -> str:
    return (f"run the same command again (swamp-ext run ... --out {run_dir}, or run_imp with "
            f"checkpoint_dir={run_dir!r} and the same config) to resume it")
