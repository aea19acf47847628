"""Exceptions of swamp_ext that are not the builtin ones: what a run folder, a file or a stopped
run tells the caller (every one also carries the builtin base users already catch)."""

from __future__ import annotations

from typing import Optional

__all__ = ["FileWriteError", "RunStopped", "STOPPED_EXIT_STATUS"]

# The exit status of a run stopped by a signal after saving: EX_TEMPFAIL of sysexits.h ("try
# again later"), for a scheduler's requeue rule. Ctrl-C keeps the shell's 130.
STOPPED_EXIT_STATUS = 75


class FileWriteError(OSError):
    """A file could not be written (disk full, permissions, a read-only folder).

    An ``OSError``: ``errno`` (``errno.ENOSPC`` for a full disk), ``strerror`` and ``filename``
    as usual; ``str(e)`` names the file, what failed and what was kept. The previous version of
    the file, if any, is unchanged, and nothing written before is lost.
    """

    def __init__(self, errno: int, strerror: str, filename: str,
                 message: Optional[str] = None) -> None:
        super().__init__(errno, strerror, filename)
        self.message = message or f"cannot write {filename}: {strerror}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # pickles with its message (multiprocessing, torchrun)
        return (type(self), (self.errno, self.strerror, self.filename, self.message))


class RunStopped(SystemExit):
    """A run stopped by a signal (SIGTERM, SIGUSR1: a scheduler's warning or preemption) after
    saving its progress at a step boundary.

    A ``SystemExit`` whose ``code`` is ``STOPPED_EXIT_STATUS`` (75): a script that does not catch
    it ends with that status, which a scheduler can requeue on; ``except Exception`` does not
    swallow it. Running the same call (or command) again resumes bitwise where it stopped.
    ``signal``: the signal's number; ``signal_name``: e.g. ``"SIGTERM"``; ``folder``: the run
    folder holding the checkpoint (None without one: nothing was saved).
    """

    def __init__(self, signal: int, signal_name: str, folder: Optional[str]) -> None:
        super().__init__(STOPPED_EXIT_STATUS)
        self.signal = signal
        self.signal_name = signal_name
        self.folder = folder

    def __str__(self) -> str:
        if self.folder:
            return (f"stopped by {self.signal_name}; progress saved in {self.folder}: run the "
                    f"same command to resume (exit status {STOPPED_EXIT_STATUS})")
        return (f"stopped by {self.signal_name}; no checkpoint_dir was given, so nothing was "
                f"saved (exit status {STOPPED_EXIT_STATUS})")

    def __reduce__(self):
        return (type(self), (self.signal, self.signal_name, self.folder))
