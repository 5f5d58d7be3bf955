"""Prefect tasks of a sweep: one variant's pipeline in its own workspace (and process), and the chosen
variant's registration through the normal promotion gate. The logic is in graft/sweep.py and the pipeline flow."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

import graft.sweep
from graft import tracking
from graft.config import load_params
from graft.paths import Paths
from graft.walk import Plan


def _report_to(store: str) -> None:
    # A variant works in its own workspace but reports to the main repository's tracking store,
    # named by the sweep's process: a remote worker's own environment does not know it.
    os.environ["MLFLOW_TRACKING_URI"] = store


def _where() -> str:
    """The Dask worker (or local process) a variant ran in, for the record."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"process {os.getpid()}"


@task(name="variant", cache_policy=NO_CACHE, retries=0)
def run_variant(store: str, workspace: str, variant: graft.sweep.Variant, plan: Plan) -> dict:
    """The pipeline, up to evaluate, in the variant's workspace (this task runs in its own process)."""
    _report_to(store)
    from flows.pipeline import pipeline

    start = time.perf_counter()
    statuses = pipeline(root=workspace, plan=plan)
    result = graft.sweep.variant_result(Path(workspace), variant, statuses, time.perf_counter() - start)
    return {**result, "where": _where()}


@task(name="promote-best", cache_policy=NO_CACHE, retries=0)
def promote(store: str, workspace: str, pipeline_run_id: str) -> dict:
    """`register` for the chosen variant, through the normal gate, nested under its pipeline run."""
    _report_to(store)
    from graft.dvc import commit_stage
    from graft.files import read_json
    from graft.runner import run_stage

    ws = Paths.at(workspace)
    pipeline_id = tracking.get_run(ws.root, pipeline_run_id)["tags"]["graft.pipeline_run_id"]
    run_stage("register", load_params(ws.params), ws.root, pipeline_run_id, pipeline_id)
    commit_stage(ws.root, "register")
    return read_json(ws.metric("register"))
