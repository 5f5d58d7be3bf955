"""The sweep flow: one isolated workspace per variant, the variants run as Prefect tasks in separate
processes (threads would share torch's global random state), one MLflow sweep run above them,
then a table, a PNG, and optionally the best variant through the normal promotion gate.

All the work is in graft/sweep.py and the pipeline flow; this file only wires it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner

import graft.sweep
from flows.server import shared_api
from graft import tracking
from graft.config import load_params
from graft.lineage import run_tags
from graft.paths import Paths
from graft.console import say, warn
from tasks.sweep import promote, run_variant
from tasks.tracking import close_sweep_run, open_sweep_run


# Processes by default, so that a deployment (prefect.yaml) runs variants apart too; `graft sweep`
# sets the runner per call (--workers, --runner dask).
@flow(name="graft-sweep", log_prints=True, task_runner=ProcessPoolTaskRunner(max_workers=2))
def sweep(root: str, specs: list[str], workers: int = 2, promote_best: bool = False,
          keep_workspaces: bool = False) -> dict:
    """Run every variant of the grid; returns {"results", "best", "table", "png", "directory", "promoted"}.

    Run it through `run_sweep` with a `task_runner` of `workers` processes (graft sweep does), so that each
    variant is a process of its own; the default pool has 2."""
    paths = Paths.at(root)
    variants = graft.sweep.plan(paths.root, specs)
    params = load_params(paths.params)
    sweep_id = graft.sweep.new_sweep_id()
    directory = graft.sweep.sweep_dir(paths.root, sweep_id)
    threads = graft.sweep.threads_per_variant(params.train.threads, workers)
    store = tracking.tracking_uri(paths.root)
    say(f"sweep {sweep_id}: {len(variants)} variants, {workers} at a time, {threads} torch thread(s) each; "
        f"workspaces in {directory.relative_to(paths.root)}")

    sweep_run = open_sweep_run(str(paths.root), params.tracking.experiment, sweep_id, graft.sweep.parse_grid(specs),
                               run_tags(paths.root, sweep_id))
    results, top, promoted, failed = [], None, None, True
    try:
        workspaces = {v.number: graft.sweep.create_workspace(paths.root, directory / str(v.number), v, threads)
                      for v in variants}
        futures = {}
        for v in variants:
            plan = graft.sweep.variant_plan(v.name, sweep_run, directory / "locks")
            futures[run_variant.submit(store, str(workspaces[v.number]), v, plan)] = v
        for future in as_completed(list(futures)):
            v = futures[future]
            try:
                result = future.result()
            except Exception as e:  # noqa: BLE001 - one failed variant must not hide the others
                result = graft.sweep.failed_result(workspaces[v.number], v, f"{type(e).__name__}: {e}")
                warn(f"[{len(results) + 1}/{len(variants)}] variant {v.number} {v.name} failed: {result['error']} "
                     f"(workspace kept: {workspaces[v.number]})")
            else:
                say(f"[{len(results) + 1}/{len(variants)}] variant {v.number} {v.name}: val_acc "
                    f"{result['val_acc']:.3f}, test_acc {result['test_acc']:.3f} ({result['seconds']:.0f}s; ran "
                    f"{', '.join(result['ran']) or 'nothing'}; restored {', '.join(result['restored']) or 'nothing'})")
            results.append(result)

        runs = {r["tags"].get("graft.variant"): r["run_id"] for r in tracking.child_runs(paths.root, sweep_run)
                if r["tags"].get("graft.kind") == "pipeline"}
        for r in results:
            r["run_id"] = runs.get(r["name"])
        top = graft.sweep.best(results)
        if promote_best and top is not None:
            promoted = promote.submit(store, top["workspace"], top["run_id"]).result()
        table = graft.sweep.format_table(results, top)
        png = graft.sweep.comparison_png(results, top, directory / "comparison.png")
        graft.sweep.save_summary(directory, results, table)
        failed = any("error" in r for r in results)
    finally:
        close_sweep_run(str(paths.root), sweep_run, str(directory), top, failed)
        graft.sweep.clean_up(paths.root, directory, results, keep_workspaces)
    return {"sweep_id": sweep_id, "sweep_run_id": sweep_run, "results": results, "best": top, "table": table,
            "png": str(png), "directory": str(directory), "promoted": promoted}


def task_runner(root: Path, variants: int, workers: int, runner: str, address: str | None):
    """Every variant in a process of its own, `workers` at a time: a local process pool (`runner`
    "process"), or Dask workers with one thread each ("dask"): a local cluster, or the one at `address`,
    checked here, before any work, to be ready for graft."""
    workers = min(workers, variants)
    if not address and runner == "process":
        return ProcessPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    if not address:
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    from prefect.settings import PREFECT_API_URL

    graft.sweep.check_cluster_ready(root, PREFECT_API_URL.value(), address)
    graft.sweep.check_workers_see(address, root)
    return DaskTaskRunner(address=address)


def run_sweep(root: Path, specs: list[str], runner, workers: int, promote_best: bool, keep_workspaces: bool) -> dict:
    """The sweep flow on `runner` (task_runner), every variant process reporting to one Prefect API."""
    with shared_api():
        return sweep.with_options(task_runner=runner)(root=str(root), specs=specs, workers=workers,
                                                      promote_best=promote_best, keep_workspaces=keep_workspaces)
