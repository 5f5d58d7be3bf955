"""One Prefect task per stage. A task only runs the stage (graft.runner.run_stage); all logic is in graft/.

No retries: a stage is deterministic computation, and retrying it would only repeat the failure.
No Prefect caching: DVC decides what is stale.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from graft.config import Params
from graft.runner import run_stage


def stage_task(name: str):
    @task(name=name, cache_policy=NO_CACHE, retries=0)
    def _run(params: Params, root: str, parent_run_id: str | None, pipeline_id: str, flow_run_id: str | None) -> dict:
        return run_stage(name, params, Path(root), parent_run_id, pipeline_id, flow_run_id)

    return _run
