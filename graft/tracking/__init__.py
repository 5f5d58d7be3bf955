"""The only package that imports MLflow: where runs, metrics, artifacts and registered models go.

`from graft import tracking; tracking.stage_run(...)`: the functions the rest of graft calls are here.
MLflow itself is imported lazily, inside the functions that need it, so importing this package is cheap.

    store.py      the store's URI, clients, reachability and retries
    pending.py    entries owed to the store (plain data, no MLflow)
    delivery.py   every write sent now or owed, run creation at most once, `graft log --pending`
    runs.py       pipeline, sweep, stage and candidate runs, and what stage code logs into them
    reaper.py     runs left RUNNING by a killed process, ended as KILLED
    registry.py   the logged classifier, registered versions, aliases, promotion by hand
    reading.py    runs read back, their children and files
    entities.py   MLflow's datasets, logged model and descriptions (imported by name: `from graft.tracking
                  import entities`, so that the stages that do not use it do not depend on its code)
"""

from graft.tracking.delivery import PLACEHOLDER, send_pending
from graft.tracking.reaper import ENDED_BY_TAG, reap_orphaned_runs
from graft.tracking.reading import child_runs, download_run_file, find_pipeline_run, get_run, pipeline_runs
from graft.tracking.registry import (VersionNotFound, alias_version, champion_version, load_version_model,
                                     log_classifier, model_versions, parse_model_uri, promote_by_hand,
                                     register_version, resolve_version, set_alias, version_aliases)
from graft.tracking.runs import (active_run_id, attached_run, end_run, log_artifact, log_artifacts, log_dict,
                                 log_epoch, log_summary, log_text, nested_run, set_tags, stage_run,
                                 start_pipeline_run, start_sweep_run)
from graft.tracking.store import (DEFAULT_ARTIFACTS, DEFAULT_DB, TrackingError, check_reachable, client_for, preload,
                                  tracking_uri)

__all__ = [
    "DEFAULT_ARTIFACTS", "DEFAULT_DB", "ENDED_BY_TAG", "PLACEHOLDER", "TrackingError", "VersionNotFound",
    "active_run_id", "alias_version", "attached_run", "champion_version", "check_reachable", "child_runs",
    "client_for", "download_run_file", "end_run", "find_pipeline_run", "get_run", "load_version_model",
    "log_artifact", "log_artifacts", "log_classifier", "log_dict", "log_epoch", "log_summary", "log_text",
    "model_versions", "nested_run", "parse_model_uri", "pipeline_runs", "preload", "promote_by_hand",
    "reap_orphaned_runs", "register_version", "resolve_version", "send_pending", "set_alias", "set_tags",
    "stage_run", "start_pipeline_run", "start_sweep_run", "tracking_uri", "version_aliases",
]
