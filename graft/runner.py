"""Run one stage with its MLflow stage run around it: used by `graft stage` (under dvc repro)
and by the Prefect tasks (under graft run) alike. A training stage with train.launcher: torchrun
runs as a torchrun process group instead of in this process (graft/training/launch.py)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from graft import tracking
from graft.config import Params, declared_values, load_params
from graft.dvc import load_dag
from graft.files import write_json
from graft.lineage import run_tags
from graft.paths import Paths
from graft.stages import get_stage
from graft.tracking import entities
from graft.training import launch


def run_stage(name: str, params: Params, root: Path, parent_run_id: str | None, pipeline_id: str,
              flow_run_id: str | None = None) -> dict:
    """Run stage `name` in this process; returns its summary plus `seconds`."""
    paths = Paths.at(root)
    stage = get_stage(name)
    decl = load_dag(paths.root)[name]
    tags = run_tags(paths.root, pipeline_id, flow_run_id)
    start = time.perf_counter()
    with tracking.stage_run(paths.root, params.tracking.experiment, name, parent_run_id,
                            declared_values(params, decl.params), tags) as run_id:
        entities.log_stage_inputs(paths.root, name)  # the datasets it reads, with their DVC hashes
        if launch.launches_processes(name, params):
            summary = launch.run_under_torchrun(name, params, paths.root, run_id)
        else:
            summary = stage.run(params, paths)
        tracking.log_summary(run_id, paths.root, summary)  # sent, or kept in .graft/pending/
        # Only now is nothing left to resume: had the summary been lost, the checkpoint would redo it at once.
        shutil.rmtree(paths.checkpoints(name), ignore_errors=True)
    return {**summary, "seconds": round(time.perf_counter() - start, 2)}


def record_pipeline(params: Params, root: Path, parent_run_id: str, tags: dict[str, str]) -> None:
    """What a parent run keeps so the pipeline can be read and rerun: params.yaml, dvc.lock,
    the metrics files, a model card (also its description), the headline metrics, the datasets it read
    and the model its register stage logged."""
    from graft.modelcard import model_card
    from graft.summary import key_metrics

    from graft.files import read_json_or_empty

    paths = Paths.at(root)
    verdict = read_json_or_empty(paths.metric("evaluate")).get("verdict")
    chosen = read_json_or_empty(paths.metric("finetune")).get("chosen")
    # Said in plain words on the pipeline run itself, where the MLflow UI lists runs.
    extra = {k: v for k, v in (("graft.transfer", verdict), ("graft.finetune_chosen", chosen)) if v}
    tracking.set_tags(parent_run_id, paths.root, {**tags, **extra})
    files = [f for f in (paths.params, paths.root / "dvc.lock") if f.exists()]
    tracking.log_artifacts(parent_run_id, paths.root, files, "pipeline")
    metrics = [f for f in sorted(paths.metrics.glob("*.json"))]
    tracking.log_artifacts(parent_run_id, paths.root, metrics, "metrics")
    tracking.log_artifacts(parent_run_id, paths.root, sorted(paths.reports.glob("*.json")), "reports")
    card = model_card(params, paths, tags)
    tracking.log_text(parent_run_id, paths.root, card, "model_card.md")
    tracking.log_summary(parent_run_id, paths.root, key_metrics(paths))
    entities.record_pipeline_entities(paths.root, parent_run_id, card)


def is_stage_worker() -> bool:
    """A process of a torchrun group that only does a stage's work: one that graft launched, or any but
    process 0 of a group the user started (`torchrun ... -m graft.cli stage NAME`)."""
    return launch.RUN_ID_VAR in os.environ or (launch.under_torchrun() and os.environ.get("RANK", "0") != "0")


def run_stage_worker(name: str, root: Path) -> dict:
    """The stage's work in one process of a torchrun group. No workspace lock (the launcher holds it) and
    no runs of its own: process 0 logs into the launcher's stage run and hands it the summary."""
    paths = Paths.at(root)
    params = load_params(paths.params)
    primary = os.environ.get("RANK", "0") == "0"
    run_id = os.environ.get(launch.RUN_ID_VAR) or None
    if primary and run_id:
        with tracking.attached_run(paths.root, run_id):
            summary = get_stage(name).run(params, paths)
    else:
        summary = get_stage(name).run(params, paths)
    if primary and os.environ.get(launch.SUMMARY_VAR):
        write_json(Path(os.environ[launch.SUMMARY_VAR]), summary)
    return summary
