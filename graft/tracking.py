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
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from graft.errors import GraftError

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"

_active: dict[str, Any] = {"client": None, "run_id": None, "root": None}


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
    sweep run by an `mlflow.parentRunId` tag and named after the variant.

    Idempotent: the pipeline id is the run's key, so a retry (after a create whose answer was lost) or a
    second `graft stage` of the same `dvc repro` finds the run already made instead of making another.
    TrackingError if the store never answers: then nothing has started yet."""
    client = client_for(root)
    run_id = _create_run_once(client, root, experiment, f"pipeline {pipeline_id[:8]}" if not run_name else run_name,
                              {**tags, **_process_tags(), "graft.kind": "pipeline", "graft.pipeline_run_id": pipeline_id},
                              key=("graft.pipeline_run_id", pipeline_id))
    _with_retries("logging the pipeline's params", _log_params, client, run_id, flatten(params))
    return run_id


def start_sweep_run(root: Path, experiment: str, sweep_id: str, grid: dict[str, list], tags: dict[str, str]) -> str:
    """The parent run of a sweep: the grid as params; each variant's pipeline run is nested under it.
    Idempotent like start_pipeline_run, keyed by the sweep id."""
    client = client_for(root)
    run_id = _create_run_once(client, root, experiment, f"sweep {sweep_id}",
                              {**tags, **_process_tags(), "graft.kind": "sweep", "graft.sweep_id": sweep_id},
                              key=("graft.sweep_id", sweep_id))
    _with_retries("logging the sweep's grid", _log_params, client, run_id,
                  {f"sweep.{k}": json.dumps(v) for k, v in grid.items()})
    return run_id


def _create_run_once(client, root: Path, experiment: str | None, name: str, tags: dict[str, str],
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

    return _with_retries(f"creating the MLflow run {name!r} in {tracking_uri(root)}", find_or_create)


def find_pipeline_run(root: Path, experiment: str, pipeline_id: str) -> str | None:
    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`graft.kind` = 'pipeline' and tags.`graft.pipeline_run_id` = '{pipeline_id}'"), max_results=1)
    return runs[0].info.run_id if runs else None


def end_run(root: Path, run_id: str, failed: bool = False) -> None:
    """End a pipeline or sweep run (what it still owes is sent first); owed to .graft/pending/ if the
    store does not answer."""
    _close(client_for(root), root, run_id, failed)


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


# ---------------------------------------------------------------- delivery: sent now, or owed to .graft/pending/

PLACEHOLDER = "pending-"  # the id of a run whose creation is owed: everything for it waits in .graft/pending/
_owed_now: dict[str, int] = {}  # run id -> entries owed by this process (said when the stage run closes)


def _is_placeholder(run_id: str) -> bool:
    return run_id.startswith(PLACEHOLDER)


def _deliver(root: Path, run_id: str, what: str, entry: dict) -> bool:
    """Send one tracking entry for `run_id` now, with retries; if the store never answers, owe it to
    .graft/pending/ (`graft log --pending` sends it later). Returns whether it was sent.

    Every write graft makes to a run goes through here: training never waits on, or dies with, the store.
    A run whose creation is itself owed gets everything owed, in order."""
    if not _is_placeholder(run_id):
        try:
            _with_retries(what, _send_entry, client_for(root), root, run_id, entry)
            return True
        except TrackingError:
            pass
    from graft import pending

    pending.owe(root, run_id, _storable(root, run_id, entry))
    _owed_now[run_id] = _owed_now.get(run_id, 0) + 1
    return False


def _storable(root: Path, run_id: str, entry: dict) -> dict:
    """An artifact entry keeps a copy of its file: the original may be replaced before the store is back."""
    if entry["kind"] != "artifact":
        return entry
    import shutil

    from graft import pending

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
        _log_params(client, run_id, entry["params"])
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


def _close(client, root: Path, run_id: str, failed: bool) -> int:
    """End a run FINISHED or FAILED, after sending what it owes (a short outage mends itself here); if the
    store does not answer, the end is owed too. Returns the number of entries this process owed for it."""
    from graft import pending

    status = "FAILED" if failed else "FINISHED"
    if run_id in pending.owed(root):
        try:
            send_pending(root, only=run_id)
        except TrackingError:
            pass  # still down: the end waits behind what is owed
    if run_id not in pending.owed(root):
        try:
            _with_retries("closing the MLflow run", client.set_terminated, run_id, status=status)
            _owed_now.pop(run_id, None)  # whatever it owed was sent just above
            return 0
        except TrackingError:
            pass
    pending.owe(root, run_id, {"kind": "terminate", "status": status})
    return _owed_now.pop(run_id, 0) + 1


def _warn_owed(stage: str, root: Path, owed_entries: int) -> None:
    if owed_entries:
        from graft.report import warn

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
    run_tags = {**tags, **_process_tags(), "graft.kind": "stage", "graft.stage": stage}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    try:
        run_id = _create_run_once(client, root, experiment, stage, run_tags)
    except TrackingError as e:
        from graft import pending

        run_id = f"{PLACEHOLDER}{uuid.uuid4().hex}"
        pending.owe(root, run_id, {"kind": "create", "experiment": experiment, "name": stage, "tags": run_tags,
                                   "key": uuid.uuid4().hex})
        _owed_now[run_id] = 1
        from graft.report import warn

        warn(f"{stage}: no MLflow run could be made ({e}); the stage runs, and its run is kept in .graft/pending/")
    _deliver(root, run_id, "logging the stage's params", {"kind": "params", "params": flatten(params)})
    _active.update(client=client, run_id=run_id, root=Path(root))
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        _active.update(client=None, run_id=None, root=None)
        _warn_owed(stage, root, _close(client, root, run_id, failed))


@contextmanager
def nested_run(name: str, params: dict, tags: dict[str, str]) -> Iterator[str | None]:
    """A child of the active stage run (one per candidate of finetune's `auto`): log_epoch lands in it while
    it is open, then in the stage run again. Yields None, and changes nothing, when no run is active or the
    store refuses the new run (the epochs then land in the stage run)."""
    parent, client, root = _active["run_id"], _active["client"], _active["root"]
    if parent is None or _is_placeholder(parent):
        yield None
        return
    try:
        parent_run = _with_retries("reading the stage run", client.get_run, parent)
        inherited = {k: v for k, v in parent_run.data.tags.items()
                     if k.startswith(("graft.", "mlflow.source."))
                     and k not in ("graft.kind", "graft.stage", "graft.run_key")}
        run_id = _create_run_once(client, root, None, name, {**inherited, **tags, **_process_tags(),
                                                             "graft.kind": "candidate", "mlflow.parentRunId": parent},
                                  exp_id=parent_run.info.experiment_id)
    except TrackingError as e:
        from graft.report import warn

        warn(f"{name}: no run of its own in {tracking_uri(root)} ({e}); its epochs go to the stage run")
        yield None
        return
    _deliver(root, run_id, "logging a candidate's params", {"kind": "params", "params": flatten(params)})
    _active["run_id"] = run_id
    failed = True
    try:
        yield run_id
        failed = False
    finally:
        _active["run_id"] = parent
        _owed_now[parent] = _owed_now.get(parent, 0) + _close(client, root, run_id, failed)


@contextmanager
def attached_run(root: Path, run_id: str) -> Iterator[str]:
    """Log into a stage run that another process opened and will close (graft's launcher, for process 0
    of a torchrun group): log_epoch and log_dict land in it while this is open."""
    _active.update(client=client_for(root), run_id=run_id, root=Path(root))
    try:
        yield run_id
    finally:
        _active.update(client=None, run_id=None, root=None)


def _metrics_entry(values: dict, step: int) -> dict:
    return {"kind": "metrics", "step": step, "timestamp": int(time.time() * 1000),
            "values": {k: float(v) for k, v in values.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}}


def log_epoch(row: dict) -> None:
    """Per-epoch metrics of the active stage run, step = epoch (one batched write per epoch)."""
    if _active["run_id"] is None:
        return
    _deliver(_active["root"], _active["run_id"], "logging an epoch",
             _metrics_entry({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"])))


def log_summary(run_id: str | None, root: Path, metrics: dict) -> None:
    """A stage's or pipeline's summary metrics (step 0): sent, or owed."""
    if run_id is None:
        return
    entry = _metrics_entry(metrics, 0)
    if entry["values"]:
        _deliver(root, run_id, "logging the summary metrics", entry)


def log_dict(data: Any, artifact_file: str) -> None:
    """A JSON file on the active stage run (no-op without one)."""
    if _active["run_id"] is None:
        return
    _deliver(_active["root"], _active["run_id"], f"logging {artifact_file}",
             {"kind": "text", "text": json.dumps(data, indent=2, default=str), "artifact_file": artifact_file})


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """A file on the active stage run (no-op without one)."""
    if _active["run_id"] is None:
        return
    log_artifacts(_active["run_id"], _active["root"], [path], artifact_path)


def log_artifacts(run_id: str, root: Path, files: list[Path], artifact_path: str | None = None) -> None:
    for f in files:
        _deliver(root, run_id, f"logging {Path(f).name}",
                 {"kind": "artifact", "path": str(Path(f).resolve()), "artifact_path": artifact_path})


def set_tags(run_id: str, root: Path, tags: dict[str, str]) -> None:
    _deliver(root, run_id, "tagging the run", {"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})


def log_text(run_id: str, root: Path, text: str, artifact_file: str) -> None:
    _deliver(root, run_id, f"logging {artifact_file}", {"kind": "text", "text": text, "artifact_file": artifact_file})


def active_run_id() -> str | None:
    return _active["run_id"]


def send_pending(root: Path, only: str | None = None) -> tuple[int, int]:
    """Send every owed entry, in order, run by run (`graft log --pending`; `only`: one run's); returns
    (entries sent, runs settled). Each entry is struck off once sent, so an outage halfway through loses
    nothing and sends nothing twice; a run whose creation was owed is created first, once (it is keyed)."""
    from graft import pending

    client = client_for(root)
    sent = runs = 0
    for owed_id, entries in pending.owed(root).items():
        if only is not None and owed_id != only:
            continue
        run_id, made = owed_id, []
        if entries and entries[0]["kind"] == "create":
            first = entries.pop(0)
            run_id = _create_run_once(client, root, first["experiment"], first["name"], first["tags"],
                                      key=("graft.run_key", first["key"]))
            made = [{"kind": "created", "run_id": run_id}]  # what was made, should the rest fail now
            pending.rewrite(root, owed_id, made + entries)
        elif entries and entries[0]["kind"] == "created":
            made = [entries.pop(0)]
            run_id = made[0]["run_id"]
        while entries:
            _with_retries("sending an owed entry", _send_entry, client, root, run_id, entries[0])
            sent += 1
            entries.pop(0)
            pending.rewrite(root, owed_id, made + entries)
        pending.settle(root, owed_id)
        runs += 1
    return sent, runs


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
    """Everything the registry knows of one model version, found by alias or number. TrackingError saying
    "not found" when the store answers that it has no such version; retried, then TrackingError, when the
    store does not answer (never mistaken for "no such version": that would promote without a comparison)."""
    from mlflow.exceptions import MlflowException

    name, ref = parse_model_uri(uri)
    client = client_for(root)

    def lookup():
        try:
            return client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return e  # an answer: there is no such version
            raise

    found = _with_retries(f"looking up {uri} in {tracking_uri(root)}", lookup)
    if isinstance(found, MlflowException):
        raise VersionNotFound(f"{uri}: not found in {tracking_uri(root)} ({found.message.splitlines()[0]})")
    mv = found
    return {"name": name, "version": str(mv.version), "source": mv.source, "run_id": mv.run_id,
            "tags": dict(mv.tags), "aliases": sorted(mv.aliases), "created_ms": mv.creation_timestamp}


class VersionNotFound(TrackingError):
    """The store answered: it has no such model version or alias."""


def champion_version(root: Path, name: str) -> dict | None:
    """The current champion of registered model `name`, or None."""
    return alias_version(root, name, "champion")


def alias_version(root: Path, name: str, alias: str) -> dict | None:
    """The version of registered model `name` that holds `alias`, or None."""
    try:
        return resolve_version(root, f"models:/{name}@{alias}")
    except VersionNotFound:
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


def register_version(root: Path, name: str, model_uri: str, tags: dict[str, str], run_id: str) -> str:
    """Register `model_uri` (logged by `run_id`) as a new version of `name`, with retries, at most once: a
    retry first looks for a version this run already registered. Returns the version number."""
    import logging

    logging.getLogger("mlflow.tracking._model_registry").setLevel(logging.WARNING)
    client = client_for(root)

    def find_or_register() -> str:
        mine = [mv for mv in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                if mv.source == model_uri or mv.tags.get("graft.model_uri") == model_uri]
        if mine:
            return str(mine[0].version)
        with _fluent(root) as mlflow:
            return str(mlflow.register_model(model_uri, name, tags={**tags, "graft.model_uri": model_uri}).version)

    return _with_retries(f"registering {name} in {tracking_uri(root)}", find_or_register)


def load_version_model(root: Path, name: str, version: str):
    """The registered model as a pyfunc: `.predict(uint8 N×C×H×W) -> probabilities`."""
    import mlflow.pyfunc

    with _fluent(root):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def set_alias(root: Path, name: str, alias: str, version: str) -> None:
    _with_retries(f"setting {name}@{alias}", client_for(root).set_registered_model_alias, name, alias, version)


def version_aliases(root: Path, name: str, version: str) -> list[str]:
    return list(_with_retries(f"reading {name} v{version}", client_for(root).get_model_version, name, version).aliases)


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
