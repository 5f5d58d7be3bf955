"""Prefect tasks around the tracking store: the pipeline's and the sweep's MLflow runs, opened and closed.
Retries belong on I/O (the tracking store), never on the deterministic stages; run creation is idempotent
(graft.tracking keys each run), so a retry never makes a second run."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from graft import tracking
from graft.config import Params
from graft.runner import record_pipeline


@task(name="open-tracking-run", retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def open_tracking_run(root: str, experiment: str, pipeline_id: str, params: dict, tags: dict,
                      run_name: str | None = None) -> str:
    return tracking.start_pipeline_run(Path(root), experiment, pipeline_id, params, tags, run_name)


@task(name="close-tracking-run", retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def close_tracking_run(root: str, run_id: str, failed: bool, params: Params, tags: dict) -> None:
    if not failed:
        record_pipeline(params, Path(root), run_id, tags)
    tracking.end_run(Path(root), run_id, failed)


@task(name="open-sweep-run", retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def open_sweep_run(root: str, experiment: str, sweep_id: str, specs: dict, tags: dict) -> str:
    return tracking.start_sweep_run(Path(root), experiment, sweep_id, specs, tags)


@task(name="close-sweep-run", retries=2, retry_delay_seconds=3, cache_policy=NO_CACHE)
def close_sweep_run(root: str, run_id: str, directory: str, top: dict | None, failed: bool) -> None:
    folder = Path(directory)
    files = [f for f in (folder / "comparison.png", folder / "table.txt", folder / "results.json") if f.exists()]
    tracking.log_artifacts(run_id, Path(root), files, "sweep")
    if top is not None:
        tracking.set_tags(run_id, Path(root), {"graft.sweep.best_variant": top["name"],
                                               "graft.sweep.best_run_id": top.get("run_id", "")})
        tracking.log_summary(run_id, Path(root), {"best_val_acc": top["val_acc"], "best_test_acc": top["test_acc"]})
    tracking.end_run(Path(root), run_id, failed)
