"""The terminal's progress line of a run."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional


class TerminalProgress:
    """One self-overwriting status line on a terminal: round, particle, epoch, loss, the last
    round's accuracy and an estimate of the time left (from the epochs trained so far)."""

    def __init__(self, particles: Optional[list[int]] = None, stream: Any = None) -> None:
        """particles: of each round (the run's plan); None: the ETA is not shown."""
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.particles = list(particles) if particles is not None else None
        self.per_particle = 0  # epochs a round's particle trains (learned from the first one)
        self.units = 0  # epochs trained in rounds by this process so far
        self.t_first: Optional[float] = None
        self.last_acc: Optional[float] = None
        self.width = 0

    def _left(self, p: Any) -> Optional[float]:
        """Seconds left: the rate of round epochs so far times the round epochs still to go."""
        if self.particles is None or self.per_particle == 0 or self.units < 2:
            return None
        rate = (time.monotonic() - self.t_first) / (self.units - 1)
        left = (p.particles - p.particle - 1) * self.per_particle + (p.epochs - p.epoch)
        for n in self.particles[p.round + 1:]:
            left += n * self.per_particle
        return rate * left

    def __call__(self, p: Any) -> None:
        if p.round >= 0:
            if self.per_particle == 0:
                self.per_particle = p.epochs - p.epoch + 1
                self.t_first = time.monotonic()
            self.units += 1
        who = (
            "ticket" if p.round < 0 else f"round {p.round} particle {p.particle + 1}/{p.particles}"
        )
        acc = "" if self.last_acc is None else f" | last acc {100 * self.last_acc:.2f}%"
        left = self._left(p) if p.round >= 0 else None
        eta = "" if left is None else f" | ETA {_clock(left)}"
        line = (f"[{_clock(time.monotonic() - self.t0)}] {who} epoch {p.epoch}/{p.epochs}"
                f" loss {p.loss:.4f} lr {p.lr:.4f}{acc}{eta}")
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def round_done(self, r: Optional[Any]) -> None:
        if r is not None:
            self.last_acc = r.test_acc
        self.stream.write("\r" + " " * max(self.width, 78) + "\r")
        self.stream.flush()


def _clock(s: float) -> str:
    s = max(0, int(s))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"
