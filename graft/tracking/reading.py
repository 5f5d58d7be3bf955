"""Reading runs back: one run as plain data, the last pipeline runs, a run's children, its files."""

from __future__ import annotations

from pathlib import Path

from graft.tracking.store import client_for, quiet_env, tracking_uri


def get_run(root: Path, run_id: str) -> dict:
    run = client_for(root).get_run(run_id)
    return {"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "start_ms": run.info.start_time, "tags": dict(run.data.tags), "params": dict(run.data.params),
            "metrics": dict(run.data.metrics), "artifact_uri": run.info.artifact_uri}


def find_pipeline_run(root: Path, experiment: str, pipeline_id: str) -> str | None:
    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`graft.kind` = 'pipeline' and tags.`graft.pipeline_run_id` = '{pipeline_id}'"), max_results=1)
    return runs[0].info.run_id if runs else None


def pipeline_runs(root: Path, experiment: str, last: int) -> list[dict]:
    """The last `last` finished pipeline (parent) runs, newest first."""
    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=last)
    return [get_run(root, r.info.run_id) for r in runs]


def child_runs(root: Path, parent_run_id: str) -> list[dict]:
    client = client_for(root)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    return [get_run(root, r.info.run_id) for r in runs]


def download_run_file(root: Path, run_id: str, artifact_path: str, dst: Path) -> Path:
    quiet_env()
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst),
                                                    tracking_uri=tracking_uri(root)))
