"""The only module that imports MLflow: where runs, metrics, artifacts and registered models go.

Runs are created with an explicit client and run ids (no fluent global run stack), so the same
code works in-process under Prefect and in a `graft stage` subprocess under `dvc repro`.
Stage code calls the module-level `log_epoch` / `log_dict`, which write to the active stage run,
or do nothing when no run is active (unit tests call stages directly).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from graft.errors import GraftError

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"

_active: dict[str, Any] = {"client": None, "run_id": None}


class TrackingError(GraftError, RuntimeError):
    """The tracking store cannot be reached or used; the message says which URI and how to fix it."""


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / DEFAULT_DB}"


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def client_for(root: Path):
    _quiet_env()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))


def check_reachable(root: Path, timeout: float = 5.0) -> None:
    """Fail fast, before any training, if the tracking server cannot be reached."""
    uri = tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except Exception as e:  # noqa: BLE001 - any failure means unreachable
        raise TrackingError(f"MLflow tracking server {uri} is not reachable ({e}). Start it, fix MLFLOW_TRACKING_URI, "
                            f"or unset it to use the local store {DEFAULT_DB}.") from None


def experiment_id(client, root: Path, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # A sqlite store would otherwise put artifacts in ./mlruns of whatever the cwd is.
        location = (Path(root).resolve() / DEFAULT_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - another process created it first
        return client.get_experiment_by_name(name).experiment_id


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def start_pipeline_run(root: Path, experiment: str, pipeline_id: str, params: dict, tags: dict[str, str]) -> str:
    """The parent run of one pipeline run; returns its id."""
    client = client_for(root)
    run = client.create_run(experiment_id(client, root, experiment), run_name=f"pipeline {pipeline_id[:8]}",
                            tags={**tags, "graft.kind": "pipeline", "graft.pipeline_run_id": pipeline_id})
    _log_params(client, run.info.run_id, flatten(params))
    return run.info.run_id


def find_pipeline_run(root: Path, experiment: str, pipeline_id: str) -> str | None:
    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`graft.kind` = 'pipeline' and tags.`graft.pipeline_run_id` = '{pipeline_id}'"), max_results=1)
    return runs[0].info.run_id if runs else None


def end_run(root: Path, run_id: str, failed: bool = False) -> None:
    client_for(root).set_terminated(run_id, status="FAILED" if failed else "FINISHED")


@contextmanager
def stage_run(root: Path, experiment: str, stage: str, parent_run_id: str | None, params: dict,
              tags: dict[str, str]) -> Iterator[str]:
    """A nested run for one stage; the stage's `log_epoch` calls land in it while it is open."""
    client = client_for(root)
    run_tags = {**tags, "graft.kind": "stage", "graft.stage": stage}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, root, experiment), run_name=stage, tags=run_tags)
    run_id = run.info.run_id
    _log_params(client, run_id, flatten(params))
    _active.update(client=client, run_id=run_id)
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        _active.update(client=None, run_id=None)
        client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def log_epoch(row: dict) -> None:
    """Per-epoch metrics of the active stage run, step = epoch (one batched write per epoch)."""
    if _active["run_id"] is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(row["epoch"])
    metrics = [Metric(k, float(v), now, step) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))]
    _active["client"].log_batch(_active["run_id"], metrics=metrics)


def log_summary(run_id: str | None, root: Path, metrics: dict) -> None:
    if run_id is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if items:
        client_for(root).log_batch(run_id, metrics=items)


def log_dict(data: Any, artifact_file: str) -> None:
    if _active["run_id"] is None:
        return
    _active["client"].log_dict(_active["run_id"], data, artifact_file)


def log_artifacts(run_id: str, root: Path, files: list[Path], artifact_path: str | None = None) -> None:
    client = client_for(root)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)


def active_run_id() -> str | None:
    return _active["run_id"]


# ---------------------------------------------------------------- model registry

def champion_version(root: Path, name: str) -> dict | None:
    """The current champion of registered model `name`: {"version", "source", "tags"}, or None."""
    from mlflow.exceptions import MlflowException

    client = client_for(root)
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    return {"version": str(mv.version), "source": mv.source, "tags": dict(mv.tags), "run_id": mv.run_id}


def download_version_files(root: Path, source: str) -> Path:
    import mlflow.artifacts

    _quiet_env()
    dst = Path(tempfile.mkdtemp(prefix="graft-champion-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                    tracking_uri=tracking_uri(root)))


def register_version(root: Path, name: str, run_id: str, files: list[Path], tags: dict[str, str]) -> str:
    """Log `files` under `model/` of the run and register them as a new version of `name`."""
    from mlflow.exceptions import MlflowException

    client = client_for(root)
    for f in files:
        client.log_artifact(run_id, str(f), "model")
    try:
        client.create_registered_model(name, description="graft fine-tuned image classifier")
    except MlflowException:
        pass  # already registered
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    mv = client.create_model_version(name, source, run_id=run_id, tags=tags)
    return str(mv.version)


def set_alias(root: Path, name: str, alias: str, version: str) -> None:
    client_for(root).set_registered_model_alias(name, alias, version)


def version_aliases(root: Path, name: str, version: str) -> list[str]:
    return list(client_for(root).get_model_version(name, version).aliases)
