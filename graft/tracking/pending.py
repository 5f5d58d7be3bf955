"""Tracking entries still owed: what could not reach the tracking store after retries.

Training never waits on, or dies with, the tracking server. An entry that cannot be sent is
appended to `.graft/pending/<run_id>.jsonl`; `graft log --pending` sends them later, in order.
This module holds plain data only (no MLflow); graft/tracking/delivery.py does the sending.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def pending_dir(root: Path) -> Path:
    return Path(root) / ".graft" / "pending"


def files_dir(root: Path, run_id: str) -> Path:
    """Where the copies of an owed run's artifact files wait."""
    return pending_dir(root) / "files" / run_id


def owe(root: Path, run_id: str, entry: dict) -> None:
    """Append one entry for `run_id`, durably. Kinds (delivery.py sends them): create (the run itself, when it
    could not be made), params, metrics, tags, text, artifact (a copy under files_dir), terminate."""
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


def rewrite(root: Path, run_id: str, entries: list[dict]) -> None:
    """Replace `run_id`'s owed entries (what is left after some were sent), atomically."""
    path = pending_dir(root) / f"{run_id}.jsonl"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def settle(root: Path, run_id: str) -> None:
    """Nothing is owed for `run_id` any more."""
    import shutil

    (pending_dir(root) / f"{run_id}.jsonl").unlink(missing_ok=True)
    shutil.rmtree(files_dir(root, run_id), ignore_errors=True)


def count(root: Path) -> int:
    return sum(len(entries) for entries in owed(root).values())
