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
