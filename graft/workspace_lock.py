"""One workspace, one writer: `graft run` and `graft stage` hold `.graft/lock` while they work.

DVC releases its own lock while a stage command runs, and stages that `graft run` runs in-process
take none, so graft needs its own. It is an flock(2) lock: the kernel drops it when the holder
exits, however it exits (SIGKILL included), so a crashed run never leaves a stale lock behind.
The file also records the holder's PID and command, to name it when a second writer is refused.
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


@contextmanager
def hold(root: Path, command: str) -> Iterator[None]:
    """Hold the workspace lock for the duration; refuse at once if another process holds it."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            raise WorkspaceBusy(f"another graft process is working in {root}: {_describe(holder)}. "
                                f"Wait for it to finish, or stop it; then run again.") from None
        # A lock file left by a killed process is simply taken over: the kernel released its flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "started": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
