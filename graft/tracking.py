"""The only module that imports MLflow: where runs, metrics, artifacts and registered models go.

Runs are created with an explicit client and run ids (no fluent global run stack), so the same
code works in-process under Prefect and in a `graft stage` subprocess under `dvc repro`.
Stage code calls the module-level `log_epoch` / `log_dict`, which write to the active stage run,
or do nothing when no run is active (unit tests call stages directly).

Every run carries the pid and host of the process that created it (`graft.pid`, `graft.host`), so that
a run that process never ended (it was killed) can be found and ended as KILLED by the next graft
command: `reap_orphaned_runs`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from graft.errors import GraftError

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"

_active: dict[str, Any] = {"client": None, "run_id": None, "root": None, "owed": 0}


def _with_retries(what: str, call, *args, **kwargs):
    """Call the tracking store, retrying with exponential backoff; TrackingError if it never answers.

    GRAFT_TRACKING_RETRIES (default 3) and GRAFT_TRACKING_BACKOFF (first wait in seconds, default 1)
    tune it. Only I/O is retried here, never training.
    """
    attempts = int(os.environ.get("GRAFT_TRACKING_RETRIES", "3"))
    wait = float(os.environ.get("GRAFT_TRACKING_BACKOFF", "1"))
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - network, server and store errors alike
            if attempt == attempts:
                raise TrackingError(f"{what} failed after {attempts} attempts: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
            time.sleep(wait * 2 ** (attempt - 1))


class TrackingError(GraftError, RuntimeError):
    """The tracking store cannot be reached or used; the message says which URI and how to fix it."""


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / DEFAULT_DB}"


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # graft retries on its own (_with_retries) and keeps what still fails; MLflow's default of 7
    # HTTP retries with backoff would stall training for minutes per call during an outage.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


def client_for(root: Path):
    _quiet_env()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))


def check_reachable(root: Path, timeout: float = 5.0) -> None:
    """Fail fast, before any training, if the tracking server cannot be reached."""
    uri = tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        return
    from graft.health import why_unreachable

    if reason := why_unreachable(uri, timeout):
        raise TrackingError(f"MLflow tracking server {uri} is not reachable ({reason}). Start it, fix "
                            f"MLFLOW_TRACKING_URI, or unset it to use the local store {DEFAULT_DB}.")


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


def start_pipeline_run(root: Path, experiment: str, pipeline_id: str, params: dict, tags: dict[str, str],
                       run_name: str | None = None) -> str:
    """The parent run of one pipeline run; returns its id. A sweep variant's is nested under the
    sweep run by an `mlflow.parentRunId` tag and named after the variant."""
    client = client_for(root)
    run = client.create_run(experiment_id(client, root, experiment), run_name=run_name or f"pipeline {pipeline_id[:8]}",
                            tags={**tags, **_process_tags(), "graft.kind": "pipeline",
                                  "graft.pipeline_run_id": pipeline_id})
    _log_params(client, run.info.run_id, flatten(params))
    return run.info.run_id


def start_sweep_run(root: Path, experiment: str, sweep_id: str, grid: dict[str, list], tags: dict[str, str]) -> str:
    """The parent run of a sweep: the grid as params; each variant's pipeline run is nested under it."""
    client = client_for(root)
    run = client.create_run(experiment_id(client, root, experiment), run_name=f"sweep {sweep_id}",
                            tags={**tags, **_process_tags(), "graft.kind": "sweep", "graft.sweep_id": sweep_id})
    _log_params(client, run.info.run_id, {f"sweep.{k}": json.dumps(v) for k, v in grid.items()})
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


# ---------------------------------------------------------------- runs left RUNNING by a killed process

ENDED_BY_TAG = "graft.ended_by"


def _process_tags() -> dict[str, str]:
    return {"graft.pid": str(os.getpid()), "graft.host": socket.gethostname()}


def _process_gone(pid: str | None) -> bool:
    """Whether the process `pid` (of this host) no longer runs; False when unsure."""
    try:
        pid_number = int(pid or "")
    except ValueError:
        return False
    if pid_number <= 0:
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    try:  # a zombie (killed, not yet waited for by its parent) does nothing any more either
        return Path(f"/proc/{pid_number}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def reap_orphaned_runs(root: Path, experiment: str) -> list[dict]:
    """End as KILLED every run of `experiment` left RUNNING by a graft process of this host that is gone
    (SIGKILL, out of memory, a closed terminal), tagged `graft.ended_by`; returns those runs
    ({"run_id", "name", "pid"}).

    Only while no other graft process works in this workspace (it takes the workspace lock if it is free,
    and skips otherwise). Runs whose end is owed in .graft/pending/ are left to `graft log --pending`;
    runs of other hosts, and runs without a `graft.pid` tag, are left alone. It never fails the command:
    with no store, an unreachable one or any error it ends nothing (an error is said in one line)."""
    uri = tracking_uri(root)
    try:
        if not os.environ.get("MLFLOW_TRACKING_URI") and not (Path(root).resolve() / DEFAULT_DB).exists():
            return []  # no store yet, so no runs (and do not create one here)
        if uri.startswith(("http://", "https://")):
            from graft.health import why_unreachable

            if why_unreachable(uri, 2.0):
                return []  # the command itself says so, where it needs the store
        from graft import pending
        from graft.workspace_lock import hold_if_free

        client = client_for(root)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        host = socket.gethostname().replace("'", "")
        running = client.search_runs([exp.experiment_id],
                                     f"attributes.status = 'RUNNING' and tags.`graft.host` = '{host}'", max_results=1000)
        owed = set(pending.owed(root))
        orphans = [r for r in running if r.info.run_id not in owed and _process_gone(r.data.tags.get("graft.pid"))]
        if not orphans:
            return []
        ended = []
        with hold_if_free(root, "graft: ending MLflow runs left RUNNING by a killed graft process") as free:
            if not free:
                return []  # a live graft works here; the next command looks again
            for run in orphans:
                if client.get_run(run.info.run_id).info.status != "RUNNING":
                    continue  # ended meanwhile
                pid = run.data.tags["graft.pid"]
                client.set_tag(run.info.run_id, ENDED_BY_TAG, f"graft: the process that ran it (pid {pid}) is gone")
                client.set_terminated(run.info.run_id, status="KILLED")
                ended.append({"run_id": run.info.run_id, "name": run.info.run_name, "pid": pid})
        return ended
    except Exception as e:  # noqa: BLE001 - housekeeping never fails the command it runs in
        from graft.report import warn

        first = str(e).splitlines()[0][:200] if str(e) else ""
        warn(f"could not look for runs left RUNNING in {uri} ({type(e).__name__}: {first}); the next graft "
             f"command tries again")
        return []


def _close(client, root: Path, run_id: str, failed: bool) -> int:
    """End a run FINISHED or FAILED, with retries; if the store never answers, owe it to .graft/pending/.
    Returns the number of entries owed (0 or 1)."""
    status = "FAILED" if failed else "FINISHED"
    try:
        _with_retries("closing the MLflow run", client.set_terminated, run_id, status=status)
        return 0
    except TrackingError:
        from graft import pending

        pending.owe(root, run_id, {"kind": "terminate", "status": status})
        return 1


@contextmanager
def stage_run(root: Path, experiment: str, stage: str, parent_run_id: str | None, params: dict,
              tags: dict[str, str]) -> Iterator[str]:
    """A nested run for one stage; the stage's `log_epoch` calls land in it while it is open."""
    client = client_for(root)
    run_tags = {**tags, **_process_tags(), "graft.kind": "stage", "graft.stage": stage}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, root, experiment), run_name=stage, tags=run_tags)
    run_id = run.info.run_id
    _log_params(client, run_id, flatten(params))
    _active.update(client=client, run_id=run_id, root=Path(root), owed=0)
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        owed_entries = _active["owed"]
        _active.update(client=None, run_id=None, root=None, owed=0)
        owed_entries += _close(client, root, run_id, failed)
        if owed_entries:
            from graft.report import warn

            warn(f"{stage}: {owed_entries} tracking entries could not be sent to {tracking_uri(root)}; they are "
                 f"kept in .graft/pending/ and `graft log --pending` sends them once the store is back")


@contextmanager
def nested_run(name: str, params: dict, tags: dict[str, str]) -> Iterator[str | None]:
    """A child of the active stage run (one per candidate of finetune's `auto`): log_epoch lands in it while
    it is open, then in the stage run again. Yields None, and changes nothing, when no run is active or the
    store refuses the new run (the epochs then land in the stage run)."""
    parent, client, root = _active["run_id"], _active["client"], _active["root"]
    if parent is None:
        yield None
        return
    try:
        parent_run = _with_retries("reading the stage run", client.get_run, parent)
        inherited = {k: v for k, v in parent_run.data.tags.items()
                     if k.startswith("graft.") and k not in ("graft.kind", "graft.stage")}
        run = _with_retries("creating a candidate run", client.create_run, parent_run.info.experiment_id,
                            run_name=name, tags={**inherited, **tags, **_process_tags(), "graft.kind": "candidate",
                                                 "mlflow.parentRunId": parent})
        run_id = run.info.run_id
        _with_retries("logging a candidate's params", _log_params, client, run_id, flatten(params))
    except TrackingError as e:
        from graft.report import warn

        warn(f"{name}: no run of its own in {tracking_uri(root)} ({e}); its epochs go to the stage run")
        yield None
        return
    _active["run_id"] = run_id
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        _active["run_id"] = parent
        _active["owed"] += _close(client, root, run_id, failed)


@contextmanager
def attached_run(root: Path, run_id: str) -> Iterator[str]:
    """Log into a stage run that another process opened and will close (graft's launcher, for process 0
    of a torchrun group): log_epoch and log_dict land in it while this is open."""
    _active.update(client=client_for(root), run_id=run_id, root=Path(root), owed=0)
    try:
        yield run_id
    finally:
        _active.update(client=None, run_id=None, root=None, owed=0)


def log_epoch(row: dict) -> None:
    """Per-epoch metrics of the active stage run, step = epoch (one batched write per epoch)."""
    if _active["run_id"] is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(row["epoch"])
    values = {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
    metrics = [Metric(k, v, now, step) for k, v in values.items()]
    try:
        _with_retries("logging an epoch", _active["client"].log_batch, _active["run_id"], metrics=metrics)
    except TrackingError:
        # Training goes on; the entry is kept for `graft log --pending`.
        from graft import pending

        pending.owe(_active["root"], _active["run_id"], {"kind": "metrics", "step": step, "timestamp": now,
                                                          "values": values})
        _active["owed"] += 1


def send_pending(root: Path) -> tuple[int, int]:
    """Send every owed entry (`graft log --pending`); returns (entries sent, runs settled)."""
    from mlflow.entities import Metric

    from graft import pending

    client = client_for(root)
    sent = runs = 0
    for run_id, entries in pending.owed(root).items():
        for entry in entries:
            if entry["kind"] == "metrics":
                metrics = [Metric(k, v, entry["timestamp"], entry["step"]) for k, v in entry["values"].items()]
                _with_retries("sending owed metrics", client.log_batch, run_id, metrics=metrics)
            elif entry["kind"] == "terminate":
                _with_retries("closing an owed run", client.set_terminated, run_id, status=entry["status"])
            sent += 1
        pending.settle(root, run_id)
        runs += 1
    return sent, runs


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


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """A file on the active stage run (no-op without one)."""
    if _active["run_id"] is None:
        return
    _active["client"].log_artifact(_active["run_id"], str(path), artifact_path)


def set_tags(run_id: str, root: Path, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client_for(root).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_text(run_id: str, root: Path, text: str, artifact_file: str) -> None:
    client_for(root).log_text(run_id, text, artifact_file)


# ---------------------------------------------------------------- models and the registry

def parse_model_uri(uri: str) -> tuple[str, str]:
    """`models:/<name>@<alias>` or `models:/<name>/<version>` -> (name, alias-or-version)."""
    if not uri.startswith("models:/"):
        raise TrackingError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, ref = rest.split("@", 1)
    elif "/" in rest:
        name, ref = rest.rsplit("/", 1)
    else:
        raise TrackingError(f"{uri!r}: name an alias (@champion) or a version (/3)")
    if not name or not ref:
        raise TrackingError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return name, ref


def resolve_version(root: Path, uri: str) -> dict:
    """Everything the registry knows of one model version, found by alias or number."""
    from mlflow.exceptions import MlflowException

    name, ref = parse_model_uri(uri)
    client = client_for(root)
    try:
        mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except MlflowException as e:
        raise TrackingError(f"{uri}: not found in {tracking_uri(root)} ({e.message.splitlines()[0]})") from None
    return {"name": name, "version": str(mv.version), "source": mv.source, "run_id": mv.run_id,
            "tags": dict(mv.tags), "aliases": sorted(mv.aliases), "created_ms": mv.creation_timestamp}


def champion_version(root: Path, name: str) -> dict | None:
    """The current champion of registered model `name`, or None."""
    return alias_version(root, name, "champion")


def alias_version(root: Path, name: str, alias: str) -> dict | None:
    """The version of registered model `name` that holds `alias`, or None."""
    try:
        return resolve_version(root, f"models:/{name}@{alias}")
    except TrackingError:
        return None


@contextmanager
def _fluent(root: Path):
    """MLflow's fluent API pointed at this store, for the calls that exist only there.

    mlflow.set_tracking_uri and set_registry_uri set module globals and also export
    MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI to the environment; restore all four so that
    graft's own choice of store, later clients in this process (an MlflowClient made without a
    registry URI reads the global) and child processes are not redirected to the last store used.
    """
    _quiet_env()
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_globals
    from mlflow.tracking._tracking_service import utils as tracking_globals

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_globals = tracking_globals._tracking_uri, registry_globals._registry_uri
    mlflow.set_tracking_uri(tracking_uri(root))
    mlflow.set_registry_uri(tracking_uri(root))
    try:
        yield mlflow
    finally:
        tracking_globals._tracking_uri, registry_globals._registry_uri = saved_globals
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_classifier(root: Path, run_id: str, model, classes: list[str], channels: int, image_size: int) -> str:
    """Log the model with mlflow.pytorch (pt2: a traced graph, no pickled code) so that
    `mlflow.pyfunc.load_model(...).predict(uint8 N×C×H×W)` returns class probabilities.

    Preprocessing travels inside: the graft classifier takes raw uint8 and normalises itself.
    """
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    import mlflow
    import mlflow.pytorch

    class Probabilities(torch.nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, images):
            return self.classifier(images).softmax(dim=1)

    wrapped = Probabilities(model.cpu().eval()).eval()
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, image_size, image_size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes)))]))
    # Batch of 2: torch.export keeps a size-1 batch dimension static.
    example = np.zeros((2, channels, image_size, image_size), dtype=np.uint8)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]
    with _fluent(root), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(wrapped, name="model", signature=signature, input_example=example,
                                        serialization_format="pt2", pip_requirements=requirements,
                                        metadata={"classes": classes, "image_size": image_size, "channels": channels})
    return info.model_uri


def register_version(root: Path, name: str, model_uri: str, tags: dict[str, str]) -> str:
    import logging

    logging.getLogger("mlflow.tracking._model_registry").setLevel(logging.WARNING)
    with _fluent(root) as mlflow:
        mv = mlflow.register_model(model_uri, name, tags=tags)
    return str(mv.version)


def load_version_model(root: Path, name: str, version: str):
    """The registered model as a pyfunc: `.predict(uint8 N×C×H×W) -> probabilities`."""
    import mlflow.pyfunc

    with _fluent(root):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def set_alias(root: Path, name: str, alias: str, version: str) -> None:
    client_for(root).set_registered_model_alias(name, alias, version)


def version_aliases(root: Path, name: str, version: str) -> list[str]:
    return list(client_for(root).get_model_version(name, version).aliases)


def model_versions(root: Path, name: str) -> list[dict]:
    """Every version of registered model `name`, oldest first: version, tags and creation time (no aliases:
    MLflow's search leaves them out). TrackingError if the store does not answer."""
    client = client_for(root)
    found = _with_retries(f"listing the versions of {name!r} in {tracking_uri(root)}",
                          client.search_model_versions, f"name = '{name}'")
    rows = [{"name": name, "version": str(mv.version), "tags": dict(mv.tags), "created_ms": mv.creation_timestamp}
            for mv in found]
    return sorted(rows, key=lambda r: int(r["version"]))


def promote_by_hand(root: Path, name: str, version: str, reason: str) -> str | None:
    """Move `champion` of `name` to `version`, bypassing the gate; the reason and the previous champion are
    tags on the version (`graft.promoted_by_hand`, `graft.previous_champion`, `graft.promoted_at`).
    Returns the previous champion's version (None if there was none; `version` itself if it already was
    champion, and then nothing is written). TrackingError, naming the existing
    versions, if there is no such version; the alias is moved only after the tags are written."""
    check_reachable(root)
    versions = [v["version"] for v in model_versions(root, name)]
    if version not in versions:
        existing = f"its versions are {', '.join(versions)}" if versions else "it has no versions registered"
        raise TrackingError(f"{name} has no version {version} in {tracking_uri(root)}; {existing}")
    previous = champion_version(root, name)
    before = previous["version"] if previous else None
    if before == version:
        return before  # nothing moves; its tags stay those of the promotion that made it champion
    client = client_for(root)
    tags = {"graft.promoted_by_hand": reason, "graft.previous_champion": before or "none",
            "graft.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for key, value in tags.items():
        _with_retries(f"tagging {name} v{version}", client.set_model_version_tag, name, version, key, value)
    _with_retries(f"moving the champion alias of {name}", client.set_registered_model_alias, name, "champion",
                  version)
    return before


# ---------------------------------------------------------------- reading runs back

def get_run(root: Path, run_id: str) -> dict:
    run = client_for(root).get_run(run_id)
    return {"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "start_ms": run.info.start_time, "tags": dict(run.data.tags), "params": dict(run.data.params),
            "metrics": dict(run.data.metrics), "artifact_uri": run.info.artifact_uri}


def pipeline_runs(root: Path, experiment: str, last: int) -> list[dict]:
    """The last `last` finished pipeline (parent) runs, newest first."""
    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=last)
    return [get_run(root, r.info.run_id) for r in runs]


def child_runs(root: Path, parent_run_id: str) -> list[dict]:
    client = client_for(root)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    return [get_run(root, r.info.run_id) for r in runs]


def download_run_file(root: Path, run_id: str, artifact_path: str, dst: Path) -> Path:
    _quiet_env()
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst),
                                                    tracking_uri=tracking_uri(root)))
