"""Prefect tasks: one per stage, made by one factory (a stage task only runs the stage through
graft.runner.run_stage; all logic is in graft/), so a new stage module needs nothing here.

No retries: a stage is deterministic computation, and retrying it would only repeat the failure.
No Prefect caching: DVC decides what is stale.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from graft.config import Params
from graft.runner import run_stage
from graft.stages import STAGES


def stage_task(name: str):
    """The Prefect task that runs stage `name` (named after it in the Prefect UI)."""
    @task(name=name, cache_policy=NO_CACHE, retries=0)
    def _run(params: Params, root: str, parent_run_id: str | None, pipeline_id: str, flow_run_id: str | None) -> dict:
        return run_stage(name, params, Path(root), parent_run_id, pipeline_id, flow_run_id)

    return _run


STAGE_TASKS = {name: stage_task(name) for name in STAGES}
