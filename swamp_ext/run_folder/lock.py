"""One writer per run folder: an advisory lock held for the whole run.

``DIR/.swamp.lock`` holds an exclusive ``flock`` while a run writes the folder, and names its
holder (host, pid, start time) for the error a second writer gets. The kernel releases the
``flock`` when the holder dies, however it dies: a lock left by a dead process of this host is
taken over. ``flock`` is not reliable on every network file system, so a record naming another
host is refused unless ``force=True`` (``swamp-ext run --force``): that host's run may be alive.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Optional

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, the record alone
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".swamp.lock"

__all__ = ["FolderInUseError", "RunFolderLock"]


class FolderInUseError(RuntimeError):
    """Another run writes this folder (``holder``: its host, pid and start time)."""

    def __init__(self, message: str, folder: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.folder, self.holder = folder, holder


def _describe(h: dict[str, Any]) -> str:
    since = h.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) \
        if isinstance(since, (int, float)) else "?"
    return f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, started {when}"


def _read(fd: int) -> Optional[dict[str, Any]]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    if not raw.strip():
        return None
    try:
        h = json.loads(raw)
    except (ValueError, RecursionError):
        return {"host": "?", "pid": "?", "unreadable": raw[:80].decode("utf-8", "replace")}
    return h if isinstance(h, dict) else {"host": "?", "pid": "?"}


class RunFolderLock:
    """``with RunFolderLock(folder, force=False):`` the run's exclusive hold on ``folder``."""

    def __init__(self, folder: str, force: bool = False) -> None:
        self.folder, self.force = folder, force
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: Optional[int] = None

    def __enter__(self) -> RunFolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read(fd) or {}
                    raise FolderInUseError(
                        f"run folder {self.folder} is in use by another run ({_describe(holder)}):"
                        " one writer per folder; wait for it, or use another folder",
                        self.folder, holder) from None
            holder = _read(fd)
            here = socket.gethostname()
            if holder and holder.get("host") != here and not self.force:
                raise FolderInUseError(
                    f"run folder {self.folder} is locked by a run on another machine "
                    f"({_describe(holder)}), which cannot be checked from here; if that run is "
                    "gone, take the folder over with force=True (swamp-ext run --force)",
                    self.folder, holder)
            record = {"host": here, "pid": os.getpid(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(record).encode())
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # no holder: the next run reads an empty record
        finally:
            os.close(self.fd)  # releases the flock
            self.fd = None
