"""Every write to a run is sent now, or owed to .graft/pending/ and sent later: training never waits on,
or dies with, the tracking store.

`deliver` sends one entry with retries, or owes it (pending.py keeps it); `close` ends a run after
sending what it owes; `send_pending` (`graft log --pending`) sends everything owed, in order. Runs are
created at most once (`create_run_once`), so a retry after a lost answer finds the run it made.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from graft.tracking import pending
from graft.tracking.store import TrackingError, client_for, experiment_id, tracking_uri, with_retries

PLACEHOLDER = "pending-"  # the id of a run whose creation is owed: everything for it waits in .graft/pending/
_owed_now: dict[str, int] = {}  # run id -> entries owed by this process (said when the stage run closes)


def is_placeholder(run_id: str) -> bool:
    return run_id.startswith(PLACEHOLDER)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def create_run_once(client, root: Path, experiment: str | None, name: str, tags: dict[str, str],
                    key: tuple[str, str] | None = None, exp_id: str | None = None) -> str:
    """Create a run, with retries, at most once: every attempt first looks for a run carrying the key tag
    (`key`, else a fresh `graft.run_key`), so a create that reached the store but whose answer was lost is
    found rather than made twice. Returns the run id; TrackingError if the store never answers."""
    tag, value = key or ("graft.run_key", uuid.uuid4().hex)
    tags = {**tags, tag: value}

    def find_or_create() -> str:
        in_experiment = exp_id or experiment_id(client, root, experiment)
        found = client.search_runs([in_experiment], f"tags.`{tag}` = '{value}'", max_results=1)
        if found:
            return found[0].info.run_id
        return client.create_run(in_experiment, run_name=name, tags=tags).info.run_id

    return with_retries(f"creating the MLflow run {name!r} in {tracking_uri(root)}", find_or_create)


def deliver(root: Path, run_id: str, what: str, entry: dict) -> bool:
    """Send one tracking entry for `run_id` now, with retries; if the store never answers, owe it to
    .graft/pending/ (`graft log --pending` sends it later). Returns whether it was sent.

    Every write graft makes to a run goes through here: training never waits on, or dies with, the store.
    A run whose creation is itself owed gets everything owed, in order."""
    if not is_placeholder(run_id):
        try:
            with_retries(what, _send_entry, client_for(root), root, run_id, entry)
            return True
        except TrackingError:
            pass
    owe(root, run_id, entry)
    return False


def owe(root: Path, run_id: str, entry: dict) -> None:
    """Keep `entry` for `run_id` in .graft/pending/, counted among what this process owes for it."""
    pending.owe(root, run_id, _storable(root, run_id, entry))
    add_owed(run_id, 1)


def add_owed(run_id: str, entries: int) -> None:
    """Count `entries` more owed for `run_id` by this process (said when its stage run closes)."""
    _owed_now[run_id] = _owed_now.get(run_id, 0) + entries


def _storable(root: Path, run_id: str, entry: dict) -> dict:
    """An artifact entry keeps a copy of its file: the original may be replaced before the store is back."""
    if entry["kind"] != "artifact":
        return entry
    import shutil

    folder = pending.files_dir(root, run_id) / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / Path(entry["path"]).name
    shutil.copyfile(entry["path"], copy)
    return {**entry, "path": str(copy.relative_to(root))}


def _send_entry(client, root: Path, run_id: str, entry: dict) -> None:
    """One entry to the store: the only place that knows each kind's MLflow call."""
    from mlflow.entities import Metric, RunTag

    kind = entry["kind"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, entry["timestamp"], entry["step"])
                                          for k, v in entry["values"].items()])
    elif kind == "params":
        log_params(client, run_id, entry["params"])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in entry["tags"].items()])
    elif kind == "text":
        client.log_text(run_id, entry["text"], entry["artifact_file"])
    elif kind == "artifact":
        path = Path(entry["path"])
        client.log_artifact(run_id, str(path if path.is_absolute() else Path(root) / path), entry.get("artifact_path"))
    elif kind == "terminate":
        client.set_terminated(run_id, status=entry["status"])
    else:
        raise ValueError(f"unknown tracking entry kind {kind!r}")


def close(client, root: Path, run_id: str, failed: bool) -> int:
    """End a run FINISHED or FAILED, after sending what it owes (a short outage mends itself here); if the
    store does not answer, the end is owed too. Returns the number of entries this process owed for it."""
    status = "FAILED" if failed else "FINISHED"
    if run_id in pending.owed(root):
        try:
            send_pending(root, only=run_id)
        except TrackingError:
            pass  # still down: the end waits behind what is owed
    if run_id not in pending.owed(root):
        try:
            with_retries("closing the MLflow run", client.set_terminated, run_id, status=status)
            _owed_now.pop(run_id, None)  # whatever it owed was sent just above
            return 0
        except TrackingError:
            pass
    pending.owe(root, run_id, {"kind": "terminate", "status": status})
    return _owed_now.pop(run_id, 0) + 1


def send_pending(root: Path, only: str | None = None) -> tuple[int, int]:
    """Send every owed entry, in order, run by run (`graft log --pending`; `only`: one run's); returns
    (entries sent, runs settled). Each entry is struck off once sent, so an outage halfway through loses
    nothing and sends nothing twice; a run whose creation was owed is created first, once (it is keyed)."""
    client = client_for(root)
    sent = runs = 0
    for owed_id, entries in pending.owed(root).items():
        if only is not None and owed_id != only:
            continue
        run_id, made = owed_id, []
        if entries and entries[0]["kind"] == "create":
            first = entries.pop(0)
            run_id = create_run_once(client, root, first["experiment"], first["name"], first["tags"],
                                     key=("graft.run_key", first["key"]))
            made = [{"kind": "created", "run_id": run_id}]  # what was made, should the rest fail now
            pending.rewrite(root, owed_id, made + entries)
        elif entries and entries[0]["kind"] == "created":
            made = [entries.pop(0)]
            run_id = made[0]["run_id"]
        while entries:
            with_retries("sending an owed entry", _send_entry, client, root, run_id, entries[0])
            sent += 1
            entries.pop(0)
            pending.rewrite(root, owed_id, made + entries)
        pending.settle(root, owed_id)
        runs += 1
    return sent, runs
