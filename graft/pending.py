"""Tracking entries still owed: what could not reach the tracking store after retries.

Training never waits on, or dies with, the tracking server. An entry that cannot be sent is
appended to `.graft/pending/<run_id>.jsonl`; `graft log --pending` sends them later, in order.
This module holds plain data only; graft.tracking does the sending.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def pending_dir(root: Path) -> Path:
    return Path(root) / ".graft" / "pending"


def owe(root: Path, run_id: str, entry: dict) -> None:
    """Append one entry (`{"kind": "metrics" | "terminate", ...}`) for `run_id`, durably."""
    folder = pending_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{run_id}.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def owed(root: Path) -> dict[str, list[dict]]:
    """{run_id: entries} for every run with entries still owed."""
    folder = pending_dir(root)
    if not folder.exists():
        return {}
    return {f.stem: [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            for f in sorted(folder.glob("*.jsonl"))}


def settle(root: Path, run_id: str) -> None:
    (pending_dir(root) / f"{run_id}.jsonl").unlink(missing_ok=True)


def count(root: Path) -> int:
    return sum(len(entries) for entries in owed(root).values())
