"""MLflow's own entities, filled from what graft already records, where the MLflow UI looks for them:

- datasets as run inputs: each prepared split (and the raw data) a run read, with DVC's hash of its folder
  in dvc.lock as the digest, the DVC path (repository-relative) as the source and its role as the context;
- the logged model (MLflow 3's LoggedModel) with its evaluation metrics linked to it, each with the split it
  was measured on; and as an output of the pipeline run too, so that run shows the logged and registered model;
- descriptions: the model card on the pipeline run, short ones on the registered model and its versions.

Part of the tracking package, so it may import MLflow (lazily, inside the functions that write). The rest
(which datasets a run read, their digests) is plain Python over dvc.yaml and dvc.lock.
Every write is best effort, with tracking's retries: a store that does not answer costs a warning, never the
stage or the pipeline run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from graft.files import read_json_or_empty, read_yaml
from graft.paths import Paths
from graft.console import warn
from graft.tracking.delivery import is_placeholder
from graft.tracking.runs import active_run_id, set_tags
from graft.tracking.store import TrackingError, client_for, tracking_uri, with_retries

NOTE_TAG = "mlflow.note.content"  # a run's Description in the MLflow UI
CONTEXT_TAG = "mlflow.data.context"  # a dataset input's role (mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT)
MAX_TAG_VALUE = 8000  # MLflow's limit on a tag's value

SPLIT_CONTEXT = {"train": "training", "val": "validation", "test": "test"}

# The target splits each stage uses (every stage that reads the target loads all three). A stage not named
# here that reads the target is taken to use all of them.
TARGET_SPLITS_READ: dict[str, tuple[str, ...]] = {
    "finetune": ("train", "val"), "baseline": ("train", "val"), "evaluate": ("val", "test"), "register": ("test",),
}


@dataclass(frozen=True)
class DatasetRef:
    """One dataset as an MLflow run input; MLflow keeps one record per (name, digest) in an experiment."""
    name: str                  # "target.train", "source", "raw"
    path: str                  # the DVC path, repository-relative: the dataset's source
    digest: str                # DVC's md5 of `path`, as dvc.lock records it
    context: str               # "training", "validation", "test", "source" or "raw"
    split: str | None = None   # the target split, or None for a whole folder
    rows: int | None = None    # examples, from the folder's manifest.json


def catalogue(paths: Paths) -> list[tuple[str, str, str | None, str]]:
    """Every dataset graft knows, as (name, DVC path, split, context), in the order MLflow lists them."""
    target = paths.prepared("target").relative_to(paths.root).as_posix()
    return [*((f"target.{split}", target, split, context) for split, context in SPLIT_CONTEXT.items()),
            ("source", paths.prepared("source").relative_to(paths.root).as_posix(), None, "source"),
            ("raw", paths.raw.relative_to(paths.root).as_posix(), None, "raw")]


def locked_outputs(lock: dict) -> dict[str, str]:
    """{DVC path: md5} of every stage output a parsed dvc.lock records."""
    return {out["path"]: out["md5"] for stage in (lock.get("stages") or {}).values()
            for out in stage.get("outs") or [] if out.get("path") and out.get("md5")}


def read_lock(root: Path) -> dict:
    lock_file = Path(root) / "dvc.lock"
    return (read_yaml(lock_file) or {}) if lock_file.exists() else {}


def _rows(paths: Paths, path: str, split: str | None) -> int | None:
    counts = read_json_or_empty(paths.root / path / "manifest.json").get("counts") or {}
    if split is not None:
        return counts.get(split)
    return sum(counts.values()) if counts else None


def datasets(paths: Paths, lock: dict, reads: list[str] | None = None,
             splits: tuple[str, ...] | None = None) -> list[DatasetRef]:
    """The datasets among the DVC paths `reads` (every one graft knows when None), the target's limited to
    `splits`. Only those dvc.lock records: a folder no stage has committed yet has no digest to give."""
    digests = locked_outputs(lock)
    refs = []
    for name, path, split, context in catalogue(paths):
        if path not in digests or (reads is not None and path not in reads):
            continue
        if split is not None and splits is not None and split not in splits:
            continue
        refs.append(DatasetRef(name, path, digests[path], context, split, _rows(paths, path, split)))
    return refs


def stage_datasets(paths: Paths, stage: str, lock: dict) -> list[DatasetRef]:
    """The datasets stage `stage` reads: its dvc.yaml deps among the datasets graft knows."""
    from graft.dvc import load_dag

    decl = load_dag(paths.root).get(stage)
    return datasets(paths, lock, reads=decl.deps, splits=TARGET_SPLITS_READ.get(stage)) if decl else []


def model_id_of(model_uri: str) -> str | None:
    """The LoggedModel id in `models:/<model_id>` (what MLflow 3's log_model returns); None for a registry URI."""
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri.removeprefix("models:/")
    return rest if rest and "/" not in rest and "@" not in rest else None


# ---------------------------------------------------------------- writes (MLflow)

def _write(root: Path, what: str, call, *args, **kwargs) -> bool:
    """One write to the store, with tracking's retries; a warning, not an error, if it never answers."""
    try:
        with_retries(what, call, *args, **kwargs)
        return True
    except TrackingError as e:
        warn(f"{what}: not recorded in {tracking_uri(root)} ({e}); everything else of the run is")
        return False


def _sendable(run_id: str | None) -> bool:
    return run_id is not None and not is_placeholder(run_id)


def _dataset_inputs(refs: list[DatasetRef]) -> list:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [DatasetInput(Dataset(name=r.name, digest=r.digest, source_type="local", source=json.dumps({"uri": r.path}),
                                 profile=json.dumps({"num_rows": r.rows}) if r.rows is not None else None),
                         tags=[InputTag(CONTEXT_TAG, r.context)])
            for r in refs]


def log_inputs(root: Path, run_id: str, refs: list[DatasetRef]) -> list[str]:
    """`refs` as inputs of run `run_id` (MLflow skips one the run already has); the names logged."""
    if not refs or not _sendable(run_id):
        return []
    names = [r.name for r in refs]
    client = client_for(root)
    if _write(root, f"logging the datasets {', '.join(names)} as inputs of run {run_id}", client.log_inputs, run_id,
              datasets=_dataset_inputs(refs)):
        return names
    return []


def log_stage_inputs(root: Path, stage: str) -> list[str]:
    """The datasets stage `stage` reads, as inputs of the active stage run (call it inside the stage run); the
    names logged. Nothing without an active run. The digests come from dvc.lock, where the upstream stages are
    committed before this one starts (by `graft run` and by `dvc repro` alike)."""
    run_id = active_run_id()
    if not _sendable(run_id):
        return []
    paths = Paths.at(root)
    return log_inputs(paths.root, run_id, stage_datasets(paths, stage, read_lock(paths.root)))


def link_model_metrics(root: Path, run_id: str, model_uri: str, metrics: dict[str, dict[str, float]]) -> str | None:
    """Log `metrics` ({target split: {name: value}}) on run `run_id` linked to the logged model `model_uri`, each
    with the split it was measured on (dataset name and DVC digest); those splits become the run's inputs.
    Returns the model id, or None when `model_uri` names no logged model."""
    model_id = model_id_of(model_uri)
    if model_id is None or not _sendable(run_id):
        return None
    from mlflow.entities import Metric

    paths = Paths.at(root)
    refs = {r.split: r for r in datasets(paths, read_lock(paths.root), splits=tuple(metrics)) if r.split}
    log_inputs(paths.root, run_id, [refs[s] for s in metrics if s in refs])
    now = int(time.time() * 1000)
    items = [Metric(key, float(value), now, 0, model_id=model_id,
                    dataset_name=refs[split].name if split in refs else None,
                    dataset_digest=refs[split].digest if split in refs else None)
             for split, values in metrics.items() for key, value in values.items()]
    if items:
        _write(paths.root, f"linking {', '.join(m.key for m in items)} to the logged model {model_id}",
               client_for(paths.root).log_batch, run_id, metrics=items)
    return model_id


def describe_version(root: Path, name: str, version: str, version_text: str, model_text: str,
                     model_id: str | None = None) -> None:
    """Descriptions of a registered model version (and of the logged model `model_id` behind it, the same
    text) and of the registered model."""
    client = client_for(root)
    _write(root, f"describing {name} version {version}", client.update_model_version, name, version,
           description=version_text)
    if model_id:
        _write(root, f"describing the logged model {model_id}", client.set_logged_model_tags, model_id,
               {NOTE_TAG: version_text[:MAX_TAG_VALUE]})
    _write(root, f"describing the registered model {name}", client.update_registered_model, name,
           description=model_text)


def record_pipeline_entities(root: Path, run_id: str, card: str) -> None:
    """On a pipeline run, at its end: the model card as its description, every dataset dvc.lock records as its
    inputs, and the model its register stage logged (if register ran under it) as its output, so the run shows
    the logged model and, through it, the registered version."""
    paths = Paths.at(root)
    set_tags(run_id, paths.root, {NOTE_TAG: card[:MAX_TAG_VALUE]})  # sent, or kept in .graft/pending/
    if not _sendable(run_id):
        return
    log_inputs(paths.root, run_id, datasets(paths, read_lock(paths.root)))
    client = client_for(paths.root)
    try:
        model_ids = with_retries("finding the model the register stage logged", _register_models, client, run_id)
    except TrackingError as e:
        warn(f"the pipeline run {run_id} does not show its model in {tracking_uri(paths.root)} ({e})")
        return
    if model_ids:
        from mlflow.entities import LoggedModelOutput

        _write(paths.root, f"linking the logged model {', '.join(model_ids)} to the pipeline run {run_id}",
               client.log_outputs, run_id, [LoggedModelOutput(model_id, 0) for model_id in model_ids])


def _register_models(client, run_id: str) -> list[str]:
    """The logged models of the register stage run nested under pipeline run `run_id` that it does not show yet."""
    parent = client.get_run(run_id)
    shown = {o.model_id for o in (parent.outputs.model_outputs if parent.outputs else [])}
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`graft.stage` = 'register'")
    found = []
    for child in children:
        outputs = client.get_run(child.info.run_id).outputs
        found += [o.model_id for o in (outputs.model_outputs if outputs else []) if o.model_id not in shown]
    return list(dict.fromkeys(found))
