"""The runs graft makes: one pipeline (or sweep) run, a nested run per stage, a child per candidate, and
what stage code logs into the active one.

Runs are created with an explicit client and run ids (no fluent global run stack), so the same code works
in-process under Prefect and in a `graft stage` subprocess under `dvc repro`. Stage code calls the
module-level `log_epoch` / `log_dict`, which write to the active stage run, or do nothing when no run is
active (unit tests call stages directly). Every write goes through delivery.py: sent now, or owed.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from graft.tracking import delivery
from graft.tracking.reaper import process_tags
from graft.tracking.store import TrackingError, client_for, tracking_uri, with_retries

_active: dict[str, Any] = {"client": None, "run_id": None, "root": None}


def start_pipeline_run(root: Path, experiment: str, pipeline_id: str, params: dict, tags: dict[str, str],
                       run_name: str | None = None) -> str:
    """The parent run of one pipeline run; returns its id. A sweep variant's is nested under the
    sweep run by an `mlflow.parentRunId` tag and named after the variant.

    Idempotent: the pipeline id is the run's key, so a retry (after a create whose answer was lost) or a
    second `graft stage` of the same `dvc repro` finds the run already made instead of making another.
    TrackingError if the store never answers: then nothing has started yet."""
    client = client_for(root)
    run_id = delivery.create_run_once(
        client, root, experiment, f"pipeline {pipeline_id[:8]}" if not run_name else run_name,
        {**tags, **process_tags(), "graft.kind": "pipeline", "graft.pipeline_run_id": pipeline_id},
        key=("graft.pipeline_run_id", pipeline_id))
    with_retries("logging the pipeline's params", delivery.log_params, client, run_id, delivery.flatten(params))
    return run_id


def start_sweep_run(root: Path, experiment: str, sweep_id: str, grid: dict[str, list], tags: dict[str, str]) -> str:
    """The parent run of a sweep: the grid as params; each variant's pipeline run is nested under it.
    Idempotent like start_pipeline_run, keyed by the sweep id."""
    client = client_for(root)
    run_id = delivery.create_run_once(client, root, experiment, f"sweep {sweep_id}",
                                      {**tags, **process_tags(), "graft.kind": "sweep", "graft.sweep_id": sweep_id},
                                      key=("graft.sweep_id", sweep_id))
    with_retries("logging the sweep's grid", delivery.log_params, client, run_id,
                 {f"sweep.{k}": json.dumps(v) for k, v in grid.items()})
    return run_id


def end_run(root: Path, run_id: str, failed: bool = False) -> None:
    """End a pipeline or sweep run (what it still owes is sent first); owed to .graft/pending/ if the
    store does not answer."""
    delivery.close(client_for(root), root, run_id, failed)


def _warn_owed(stage: str, root: Path, owed_entries: int) -> None:
    if owed_entries:
        from graft.console import warn

        warn(f"{stage}: {owed_entries} tracking entries could not be sent to {tracking_uri(root)}; they are "
             f"kept in .graft/pending/ and `graft log --pending` sends them once the store is back")


@contextmanager
def stage_run(root: Path, experiment: str, stage: str, parent_run_id: str | None, params: dict,
              tags: dict[str, str]) -> Iterator[str]:
    """A nested run for one stage; the stage's `log_epoch` calls land in it while it is open.

    If the store does not answer when the run is made, the stage still runs: its run is owed to
    .graft/pending/ under a placeholder id (with its params, epochs, summary and end), and
    `graft log --pending` creates it and sends the rest."""
    client = client_for(root)
    run_tags = {**tags, **process_tags(), "graft.kind": "stage", "graft.stage": stage}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    try:
        run_id = delivery.create_run_once(client, root, experiment, stage, run_tags)
    except TrackingError as e:
        run_id = f"{delivery.PLACEHOLDER}{uuid.uuid4().hex}"
        delivery.owe(root, run_id, {"kind": "create", "experiment": experiment, "name": stage, "tags": run_tags,
                                    "key": uuid.uuid4().hex})
        from graft.console import warn

        warn(f"{stage}: no MLflow run could be made ({e}); the stage runs, and its run is kept in .graft/pending/")
    delivery.deliver(root, run_id, "logging the stage's params", {"kind": "params", "params": delivery.flatten(params)})
    _active.update(client=client, run_id=run_id, root=Path(root))
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        _active.update(client=None, run_id=None, root=None)
        _warn_owed(stage, root, delivery.close(client, root, run_id, failed))


@contextmanager
def nested_run(name: str, params: dict, tags: dict[str, str]) -> Iterator[str | None]:
    """A child of the active stage run (one per candidate of finetune's `auto`): log_epoch lands in it while
    it is open, then in the stage run again. Yields None, and changes nothing, when no run is active or the
    store refuses the new run (the epochs then land in the stage run)."""
    parent, client, root = _active["run_id"], _active["client"], _active["root"]
    if parent is None or delivery.is_placeholder(parent):
        yield None
        return
    try:
        parent_run = with_retries("reading the stage run", client.get_run, parent)
        inherited = {k: v for k, v in parent_run.data.tags.items()
                     if k.startswith(("graft.", "mlflow.source."))
                     and k not in ("graft.kind", "graft.stage", "graft.run_key")}
        run_id = delivery.create_run_once(client, root, None, name,
                                          {**inherited, **tags, **process_tags(), "graft.kind": "candidate",
                                           "mlflow.parentRunId": parent},
                                          exp_id=parent_run.info.experiment_id)
    except TrackingError as e:
        from graft.console import warn

        warn(f"{name}: no run of its own in {tracking_uri(root)} ({e}); its epochs go to the stage run")
        yield None
        return
    delivery.deliver(root, run_id, "logging a candidate's params",
                     {"kind": "params", "params": delivery.flatten(params)})
    _active["run_id"] = run_id
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        _active["run_id"] = parent
        delivery.add_owed(parent, delivery.close(client, root, run_id, failed))


@contextmanager
def attached_run(root: Path, run_id: str) -> Iterator[str]:
    """Log into a stage run that another process opened and will close (graft's launcher, for process 0
    of a torchrun group): log_epoch and log_dict land in it while this is open."""
    _active.update(client=client_for(root), run_id=run_id, root=Path(root))
    try:
        yield run_id
    finally:
        _active.update(client=None, run_id=None, root=None)


def active_run_id() -> str | None:
    return _active["run_id"]


def _metrics_entry(values: dict, step: int) -> dict:
    return {"kind": "metrics", "step": step, "timestamp": int(time.time() * 1000),
            "values": {k: float(v) for k, v in values.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}}


def log_epoch(row: dict) -> None:
    """Per-epoch metrics of the active stage run, step = epoch (one batched write per epoch)."""
    if _active["run_id"] is None:
        return
    delivery.deliver(_active["root"], _active["run_id"], "logging an epoch",
                     _metrics_entry({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"])))


def log_summary(run_id: str | None, root: Path, metrics: dict) -> None:
    """A stage's or pipeline's summary metrics (step 0): sent, or owed."""
    if run_id is None:
        return
    entry = _metrics_entry(metrics, 0)
    if entry["values"]:
        delivery.deliver(root, run_id, "logging the summary metrics", entry)


def log_dict(data: Any, artifact_file: str) -> None:
    """A JSON file on the active stage run (no-op without one)."""
    if _active["run_id"] is None:
        return
    delivery.deliver(_active["root"], _active["run_id"], f"logging {artifact_file}",
                     {"kind": "text", "text": json.dumps(data, indent=2, default=str), "artifact_file": artifact_file})


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """A file on the active stage run (no-op without one)."""
    if _active["run_id"] is None:
        return
    log_artifacts(_active["run_id"], _active["root"], [path], artifact_path)


def log_artifacts(run_id: str, root: Path, files: list[Path], artifact_path: str | None = None) -> None:
    for f in files:
        delivery.deliver(root, run_id, f"logging {Path(f).name}",
                         {"kind": "artifact", "path": str(Path(f).resolve()), "artifact_path": artifact_path})


def set_tags(run_id: str, root: Path, tags: dict[str, str]) -> None:
    delivery.deliver(root, run_id, "tagging the run", {"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})


def log_text(run_id: str, root: Path, text: str, artifact_file: str) -> None:
    delivery.deliver(root, run_id, f"logging {artifact_file}",
                     {"kind": "text", "text": text, "artifact_file": artifact_file})
