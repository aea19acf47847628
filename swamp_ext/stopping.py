"""Stopping a run on a signal: SIGTERM (what SLURM, Kubernetes and most schedulers send before
SIGKILL) and SIGUSR1 (SLURM's ``--signal`` warning) by default.

While a run trains, a handler records the signal and nothing else: it never raises inside the
code it interrupts (a data loader's, a callback's). The core sees the request between two
training steps, saves the checkpoint there and stops; ``run_imp`` raises
``swamp_ext.RunStopped`` (a ``SystemExit`` with status 75) and the same call resumes bitwise.
The previous handlers come back when the run ends. Ctrl-C (SIGINT) keeps Python's own
KeyboardInterrupt, saved the same way.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Iterable, Optional, Union

__all__ = ["DEFAULT_STOP_SIGNALS", "StopOnSignals", "resolve_signals"]

DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGUSR1")

SignalSpec = Union[None, str, int, Iterable[Union[str, int]]]


def resolve_signals(spec: SignalSpec, what: str = "stop_signals") -> tuple[signal.Signals, ...]:
    """``spec`` as signals: names (``"SIGTERM"``, ``"TERM"``, ``"usr1"``) or numbers, one or a
    sequence; None or empty: none. ValueError naming the entry for anything else."""
    if spec is None:
        return ()
    items = [spec] if isinstance(spec, (str, int)) else list(spec)
    out: list[signal.Signals] = []
    for item in items:
        sig: Optional[signal.Signals] = None
        if isinstance(item, bool):
            pass
        elif isinstance(item, int):
            try:
                sig = signal.Signals(item)
            except ValueError:
                sig = None
        elif isinstance(item, str):
            name = item.strip().upper()
            name = name if name.startswith("SIG") else "SIG" + name
            sig = getattr(signal.Signals, name, None)
        if sig is None:
            raise ValueError(f"{what}: {item!r} is not a signal of this system (names such as "
                             "'SIGTERM', 'SIGUSR1', or numbers)")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"{what}: {sig.name} cannot be caught by any process; a run killed "
                             "by it resumes from its last checkpoint (checkpoint_every_steps)")
        if sig == signal.SIGINT:
            raise ValueError(f"{what}: SIGINT (Ctrl-C) already saves and stops the run, with "
                             "KeyboardInterrupt")
        if sig not in out:
            out.append(sig)
    return tuple(out)


class StopOnSignals:
    """While entered: each of ``signals`` asks ``request`` (a ``_C.RunRequest``) to save and stop
    at the next step boundary. Outside the main thread Python cannot install handlers: nothing
    is installed (``active`` False) and the signals keep their previous effect."""

    def __init__(self, signals: tuple[signal.Signals, ...], request: Any) -> None:
        self.signals = signals
        self.request = request
        self.previous: dict[signal.Signals, Any] = {}
        self.active = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.request.stop_signal == 0:
            self.request.request_stop(signum)

    def __enter__(self) -> StopOnSignals:
        if self.signals and threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self.previous[s] = signal.signal(s, self._handler)
            self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self.previous.clear()
        self.active = False


def ignore_in_worker(signals: tuple[int, ...]) -> None:
    """In a data-loading worker process: the stop signals are the main process's to act on (a
    scheduler signalling the whole process group must not kill the workers under the run)."""
    for s in signals:
        signal.signal(s, signal.SIG_IGN)
