"""The pipeline flow: graft.walk walks the stages (DVC decides what is stale; a stale stage is restored
from DVC's run cache or run, then recorded in dvc.lock); here each stage runs as a Prefect task, inside
one MLflow pipeline run."""

from __future__ import annotations

import uuid
from dataclasses import replace

from prefect import flow

from graft.config import load_params
from graft.dvc import downstream, load_dag
from graft.lineage import run_tags
from graft.paths import Paths
from graft.console import warn
from graft.summary import save_stage_statuses
from graft.walk import Plan, walk
from tasks import STAGE_TASKS
from tasks.tracking import close_tracking_run, open_tracking_run



def prefect_ui_tag(flow_run_id: str | None) -> dict[str, str]:
    """A link to this flow run in the Prefect UI, when a persistent server serves one."""
    import os

    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not (flow_run_id and ui and os.environ.get("PREFECT_API_URL")):
        return {}  # a temporary server's UI is gone when the run ends
    return {"graft.prefect_flow_run_url": f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"}


def restored_tag(statuses: dict[str, dict]) -> dict[str, str]:
    """Which stages took their outputs from DVC's run cache: said on the pipeline run, since such a
    stage has no stage run of its own under it (the run that made those outputs is an earlier one)."""
    restored = [name for name, s in statuses.items() if s["status"] == "restored"]
    return {"graft.restored_from_run_cache": ", ".join(restored)} if restored else {}


@flow(name="graft-pipeline", log_prints=True)
def pipeline(root: str = ".", force: str | None = None, plan: Plan | None = None) -> dict:
    """Run what is stale (plus `force` and everything downstream of it); returns each stage's status.

    graft.walk does the walk: a stale stage that is not forced takes its outputs from DVC's run cache when
    a run with the same inputs was saved (earlier in this workspace, or by another sweep variant), else it
    runs here as a Prefect task. `plan` says what this walk does differently (a sweep variant's)."""
    paths = Paths.at(root)
    params = load_params(paths.params)
    dag = load_dag(paths.root)
    plan = plan or Plan()
    if force:
        plan = replace(plan, forced=(*plan.forced, *downstream(dag, force)))
    pipeline_id = uuid.uuid4().hex
    from prefect.runtime import flow_run

    flow_run_id = flow_run.id
    tags = {**run_tags(paths.root, pipeline_id, flow_run_id), **prefect_ui_tag(flow_run_id), **plan.tags}
    parent = open_tracking_run(str(paths.root), params.tracking.experiment, pipeline_id,
                               params.model_dump(mode="json"), tags, plan.run_name)

    def run_stage(name: str) -> dict:
        return STAGE_TASKS[name](params, str(paths.root), parent, pipeline_id, flow_run_id)

    statuses: dict[str, dict] = {}
    failed = True
    try:
        walk(paths.root, dag, plan, run_stage, statuses)
        failed = False
    finally:
        save_stage_statuses(paths, statuses)
        try:
            # Tags again: the data hash is known only once ingest is recorded in dvc.lock.
            close_tracking_run(str(paths.root), parent, failed, params,
                               {**run_tags(paths.root, pipeline_id, flow_run_id), **restored_tag(statuses)})
        except Exception as e:  # noqa: BLE001 - never hide the stage's own error behind a tracking one
            warn(f"could not close the MLflow run {parent}: {e}")
    return statuses
