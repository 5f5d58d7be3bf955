"""The pipeline flow: walk the stages in DAG order, ask DVC about each just before its turn,
run the stale ones in-process as Prefect tasks, and record each in dvc.lock."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from graft import tracking
from graft.config import Params, load_params
from graft.dag import commit_stage, downstream, input_fingerprint, load_dag, restore_from_run_cache, stale_stages
from graft.errors import GraftError
from graft.lineage import run_tags
from graft.paths import Paths
from graft.report import say, warn
from graft.runner import record_pipeline
from graft.stages import STAGES
from graft.summary import save_stage_statuses
from graft.sweep import VariantRun, stage_slot
from tasks.baseline import baseline
from tasks.evaluate import evaluate
from tasks.finetune import finetune
from tasks.ingest import ingest
from tasks.prepare import prepare
from tasks.pretrain import pretrain
from tasks.register import register
from tasks.replace_head import replace_head

STAGE_TASKS = {"ingest": ingest, "prepare": prepare, "pretrain": pretrain, "replace_head": replace_head,
               "finetune": finetune, "baseline": baseline, "evaluate": evaluate, "register": register}
assert tuple(STAGE_TASKS) == STAGES


class InputsChangedError(GraftError, RuntimeError):
    """A stage's inputs changed while it ran; its outputs were not recorded."""


# Retries belong on I/O (the tracking store), never on the deterministic stages.
@task(name="open-tracking-run", retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def open_tracking_run(root: str, experiment: str, pipeline_id: str, params: dict, tags: dict,
                      run_name: str | None = None) -> str:
    return tracking.start_pipeline_run(Path(root), experiment, pipeline_id, params, tags, run_name)


@task(name="close-tracking-run", retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def close_tracking_run(root: str, run_id: str, failed: bool, params: Params, tags: dict) -> None:
    if not failed:
        record_pipeline(params, Path(root), run_id, tags)
    tracking.end_run(Path(root), run_id, failed)


def prefect_ui_tag(flow_run_id: str | None) -> dict[str, str]:
    """A link to this flow run in the Prefect UI, when a persistent server serves one."""
    import os

    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not (flow_run_id and ui and os.environ.get("PREFECT_API_URL")):
        return {}  # a temporary server's UI is gone when the run ends
    return {"graft.prefect_flow_run_url": f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"}


@flow(name="graft-pipeline", log_prints=True)
def pipeline(root: str = ".", force: str | None = None, variant: VariantRun | None = None) -> dict:
    """Run what is stale (plus `force` and everything downstream of it); returns each stage's status.

    As a sweep `variant`: stop before register, and restore a stage from DVC's run cache when a
    run with the same inputs was saved (by another variant), rather than train it again."""
    paths = Paths.at(root)
    params = load_params(paths.params)
    dag = load_dag(paths.root)
    forced = set(downstream(dag, force)) if force else set()
    pipeline_id = uuid.uuid4().hex
    from prefect.runtime import flow_run

    flow_run_id = flow_run.id
    tags = run_tags(paths.root, pipeline_id, flow_run_id)
    tags.update(prefect_ui_tag(flow_run_id))
    if variant:
        tags.update({"mlflow.parentRunId": variant.sweep_run_id, "graft.variant": variant.name})
    parent = open_tracking_run(str(paths.root), params.tracking.experiment, pipeline_id,
                               params.model_dump(mode="json"), tags, variant.name if variant else None)
    statuses: dict[str, dict] = {}
    failed = True
    try:
        for name, decl in dag.items():
            if variant and name == "register":
                statuses[name] = {"status": "skipped", "seconds": None}  # only the best, on request
                continue
            reasons = ["forced"] if name in forced else stale_stages(paths.root, [name]).get(name)
            if not reasons:
                say(f"{name}: up to date")
                statuses[name] = {"status": "up to date", "seconds": None}
                continue
            before = input_fingerprint(paths.root, decl)
            with stage_slot(variant.lock_dir, name, before) if variant else nullcontext():
                if variant and restore_from_run_cache(paths.root, name):
                    say(f"{name}: restored from DVC's run cache (same inputs ran already)")
                    statuses[name] = {"status": "restored", "seconds": None}
                    continue
                say(f"{name}: running ({'; '.join(reasons[:3])})")
                statuses[name] = {"status": "failed", "seconds": None}  # until it returns
                summary = STAGE_TASKS[name](params, str(paths.root), parent, pipeline_id, flow_run_id)
                if input_fingerprint(paths.root, decl) != before:
                    statuses[name] = {"status": "not recorded", "seconds": summary["seconds"]}
                    raise InputsChangedError(f"{name}: its inputs changed while it ran, so its outputs were not "
                                             f"recorded in dvc.lock; run `graft run` again")
                commit_stage(paths.root, name)  # also saves the run in DVC's run cache
            statuses[name] = {"status": "ran", "seconds": summary["seconds"]}
        failed = False
    finally:
        save_stage_statuses(paths, statuses)
        try:
            # Tags again: the data hash is known only once ingest is recorded in dvc.lock.
            close_tracking_run(str(paths.root), parent, failed, params, run_tags(paths.root, pipeline_id, flow_run_id))
        except Exception as e:  # noqa: BLE001 - never hide the stage's own error behind a tracking one
            warn(f"could not close the MLflow run {parent}: {e}")
    return statuses
