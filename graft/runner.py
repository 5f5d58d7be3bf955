"""Run one stage with its MLflow stage run around it: used by `graft stage` (under dvc repro)
and by the Prefect tasks (under graft run) alike."""

from __future__ import annotations

import time
from pathlib import Path

from graft import tracking
from graft.config import Params
from graft.dag import load_dag, stage_params
from graft.lineage import run_tags
from graft.paths import Paths
from graft.stages import get_stage


def run_stage(name: str, params: Params, root: Path, parent_run_id: str | None, pipeline_id: str,
              flow_run_id: str | None = None) -> dict:
    """Run stage `name` in this process; returns its summary plus `seconds`."""
    paths = Paths.at(root)
    stage = get_stage(name)
    decl = load_dag(paths.root)[name]
    tags = run_tags(paths.root, pipeline_id, flow_run_id)
    start = time.perf_counter()
    with tracking.stage_run(paths.root, params.tracking.experiment, name, parent_run_id,
                            stage_params(paths.root, decl), tags) as run_id:
        summary = stage.run(params, paths)
        tracking.log_summary(run_id, paths.root, summary)
    return {**summary, "seconds": round(time.perf_counter() - start, 2)}


def record_pipeline(params: Params, root: Path, parent_run_id: str, tags: dict[str, str]) -> None:
    """What a parent run keeps so the pipeline can be read and rerun: params.yaml, dvc.lock,
    the metrics files, a model card, and the headline metrics."""
    from graft.modelcard import model_card
    from graft.summary import key_metrics

    paths = Paths.at(root)
    tracking.set_tags(parent_run_id, paths.root, tags)
    files = [f for f in (paths.params, paths.root / "dvc.lock") if f.exists()]
    tracking.log_artifacts(parent_run_id, paths.root, files, "pipeline")
    metrics = [f for f in sorted(paths.metrics.glob("*.json"))]
    tracking.log_artifacts(parent_run_id, paths.root, metrics, "metrics")
    tracking.log_text(parent_run_id, paths.root, model_card(params, paths, tags), "model_card.md")
    tracking.log_summary(parent_run_id, paths.root, key_metrics(paths))
