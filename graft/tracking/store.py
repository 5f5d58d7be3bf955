"""Where the tracking store is and how graft talks to it: its URI, clients, reachability and retries.

Every other module of the package reaches MLflow through a client made here (`client_for`), or through
MLflow's fluent API pointed at the same store (`fluent`), and retries its calls with `with_retries`.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from graft.errors import GraftError

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


class TrackingError(GraftError, RuntimeError):
    """The tracking store cannot be reached or used; the message says which URI and how to fix it."""


def with_retries(what: str, call, *args, **kwargs):
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


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / DEFAULT_DB}"


def is_server(uri: str) -> bool:
    """Whether `uri` names a tracking server (as opposed to a local store)."""
    return uri.startswith(("http://", "https://"))


def quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # graft retries on its own (with_retries) and keeps what still fails; MLflow's default of 7
    # HTTP retries with backoff would stall training for minutes per call during an outage.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


def preload() -> None:
    """Import MLflow now, e.g. while something else starts (every pipeline run needs it)."""
    quiet_env()
    import mlflow  # noqa: F401


def client_for(root: Path):
    quiet_env()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))


def check_reachable(root: Path, timeout: float = 5.0) -> None:
    """Fail fast, before any training, if the tracking server cannot be reached."""
    uri = tracking_uri(root)
    if not is_server(uri):
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


@contextmanager
def fluent(root: Path):
    """MLflow's fluent API pointed at this store, for the calls that exist only there.

    mlflow.set_tracking_uri and set_registry_uri set module globals and also export
    MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI to the environment; restore all four so that
    graft's own choice of store, later clients in this process (an MlflowClient made without a
    registry URI reads the global) and child processes are not redirected to the last store used.
    """
    quiet_env()
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
