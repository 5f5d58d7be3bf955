"""One workspace, one writer: `graft run` and `graft stage` hold `.graft/lock` while they work.

DVC releases its own lock while a stage command runs, and stages that `graft run` runs in-process
take none, so graft needs its own. It is an flock(2) lock: the kernel drops it when the holder
exits, however it exits (SIGKILL included), so a crashed run never leaves a stale lock behind.
The file also records the holder's PID and command, to name it when a second writer is refused; it is
emptied when the holder lets go, so a record found by the next holder says that the previous one was
killed while it worked (and may have left MLflow runs RUNNING: graft.tracking.reap_orphaned_runs).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from graft.errors import GraftError


class WorkspaceBusy(GraftError):
    """Another graft process is working in this workspace."""


def lock_path(root: Path) -> Path:
    return Path(root) / ".graft" / "lock"


def _describe(holder: dict) -> str:
    started = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"PID {holder.get('pid', '?')} (`{holder.get('command', '?')}`, started {started})"


_HELD: set[Path] = set()  # workspaces whose lock this process holds


def _open(root: Path) -> int:
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextmanager
def _locked(root: Path, fd: int, command: str) -> Iterator[dict | None]:
    """With the flock taken: record this process as the holder; yield what a killed holder left, if anything."""
    left = _holder(fd) or None  # a lock file left by a killed process is simply taken over
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "started": time.time()}).encode(), 0)
    key = Path(root).resolve()
    _HELD.add(key)
    try:
        yield left
    finally:
        _HELD.discard(key)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def hold(root: Path, command: str) -> Iterator[dict | None]:
    """Hold the workspace lock for the duration; refuse at once if another process holds it.

    Yields the record a killed holder left in the lock file ({"pid", "command", "started"}), or None."""
    fd = _open(root)
    try:
        if not _try_flock(fd):
            raise WorkspaceBusy(f"another graft process is working in {root}: {_describe(_holder(fd))}. "
                                f"Wait for it to finish, or stop it; then run again.") from None
        with _locked(root, fd, command) as left:
            yield left
    finally:
        os.close(fd)


@contextmanager
def hold_if_free(root: Path, command: str) -> Iterator[bool]:
    """Hold the workspace lock for the duration if no other process holds it; yields whether this process
    holds it (True at once when it already does, e.g. inside `hold`)."""
    if Path(root).resolve() in _HELD:
        yield True
        return
    fd = _open(root)
    try:
        if not _try_flock(fd):
            yield False
            return
        with _locked(root, fd, command):
            yield True
    finally:
        os.close(fd)
