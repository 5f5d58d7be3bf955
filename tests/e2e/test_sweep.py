"""Sweeps end to end: real Prefect (process pool), DVC (run cache shared by workspaces) and MLflow, tiny data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from graft.tracking import tracking_uri
from tests.conftest import make_workspace, run_cli

pytestmark = pytest.mark.e2e


def runs(client, experiment_id, where):
    return client.search_runs([experiment_id], where)


def graft_sweep(ws, *args, check=True):
    """`graft sweep` as a user runs it, in a process of its own, against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    return run_cli(ws, "sweep", *args, env={"PREFECT_API_URL": PREFECT_API_URL.value()}, check=check)


def test_a_sweep_shares_pretraining_and_compares_the_variants(tmp_path, prefect_server):
    """Two variants on two workers (tests/test_sweep.py checks how a grid of several keys expands)."""
    ws = make_workspace(tmp_path / "ws")
    params_before = (ws / "params.yaml").read_text()
    proc = graft_sweep(ws, "-S", "finetune.lr=0.01,0.003", "-S", "finetune.strategy=linear_probe", "--workers", "2",
                       "--promote-best")
    out, progress = proc.stdout, proc.stderr

    client = MlflowClient(tracking_uri(ws))
    exp = client.get_experiment_by_name("graft").experiment_id
    (sweep,) = runs(client, exp, "tags.`graft.kind` = 'sweep'")
    children = runs(client, exp, f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}' and tags.`graft.kind` = 'pipeline'")
    assert len(children) == 2
    grid = {(c.data.params["finetune.lr"], c.data.params["finetune.strategy"]) for c in children}
    assert grid == {("0.01", "linear_probe"), ("0.003", "linear_probe")}
    assert all(c.info.status == "FINISHED" and "test_acc" in c.data.metrics for c in children)

    # Stages with the same inputs in every variant ran once; the other variants restored them from DVC's run cache.
    stage_runs = runs(client, exp, "tags.`graft.kind` = 'stage'")
    count = {s: sum(r.data.tags["graft.stage"] == s for r in stage_runs)
             for s in ("ingest", "pretrain", "baseline", "finetune", "evaluate", "register")}
    assert count == {"ingest": 1, "pretrain": 1, "baseline": 1, "finetune": 2, "evaluate": 2, "register": 1}, count
    (sweep_dir,) = (ws / ".graft/sweeps").iterdir()
    results = json.loads((sweep_dir / "results.json").read_text())
    assert sorted("pretrain" in r["ran"] for r in results) == [False, True]
    assert sum("pretrain" in r["restored"] for r in results) == 1
    assert "[2/2] variant" in progress  # one progress line per variant as it finishes

    # The table is printed; the PNG and the table are on the sweep run.
    assert "best by validation accuracy" in out
    for name in ("lr=0.01,strategy=linear_probe", "lr=0.003,strategy=linear_probe"):
        assert name in out
    artifacts = {a.path for a in client.list_artifacts(sweep.info.run_id, "sweep")}
    assert {"sweep/comparison.png", "sweep/table.txt"} <= artifacts
    png = client.download_artifacts(sweep.info.run_id, "sweep/comparison.png", str(tmp_path))
    assert Path(png).read_bytes()[:4] == b"\x89PNG"

    # --promote-best: the variant best on validation data went through the normal gate.
    top = max(results, key=lambda r: (r["val_acc"], -r["number"]))
    assert sweep.data.tags["graft.sweep.best_variant"] == top["name"]
    assert [str(v.version) for v in client.search_model_versions("name = 'graft-classifier'")] == ["1"]
    version = client.get_model_version("graft-classifier", "1")
    assert "graft.gate.promote" in version.tags and sorted(version.aliases) == ["challenger", "champion"]
    assert client.get_run(version.run_id).data.tags["mlflow.parentRunId"] == sweep.data.tags["graft.sweep.best_run_id"]
    assert client.get_run(sweep.data.tags["graft.sweep.best_run_id"]).data.tags["graft.variant"] == top["name"]

    # The main repository is untouched and the workspaces are gone.
    assert (ws / "params.yaml").read_text() == params_before
    assert not (ws / "dvc.lock").exists()
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ws, capture_output=True, text=True, check=True).stdout
    assert len(worktrees.splitlines()) == 1, worktrees
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["comparison.png", "results.json", "table.txt"]


def test_a_bad_grid_is_refused_before_anything_is_written(bare_workspace):
    workspace = bare_workspace
    proc = run_cli(workspace, "sweep", "-S", "finetune.lr=0.01,0.003", "-S", "finetune.lrr=1,2", check=False)
    assert proc.returncode == 1
    assert "unknown key 'finetune.lrr'" in proc.stderr and "did you mean 'finetune.lr'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workspace / ".graft/sweeps").exists() and not (workspace / "mlflow.db").exists()

    proc = run_cli(workspace, "sweep", "-S", "finetune.lr=0.01,-1", check=False)
    assert proc.returncode == 1 and "finetune.lr = -1" in proc.stderr


def test_a_local_dask_cluster_runs_the_variants_and_a_failed_one_is_reported(tmp_path, prefect_server):
    """One Dask worker for the two variants (test_a_sweep_shares_pretraining_and_compares_the_variants runs two
    at once): each worker process pays its own imports, ~5 s of CPU here, for nothing this test checks."""
    ws = make_workspace(tmp_path / "ws")
    # Valid params, but 1000 labels per class is more than the tiny data has: prepare fails in variant 2.
    proc = graft_sweep(ws, "-S", "data.labels_per_class=4,1000", "--runner", "dask", "--workers", "1", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    (sweep_dir,) = (ws / ".graft/sweeps").iterdir()
    ok, failed = sorted(json.loads((sweep_dir / "results.json").read_text()), key=lambda r: r["number"])
    assert ok["name"] == "labels_per_class=4" and ok["where"].startswith("tcp://127.0.0.1:")  # a Dask worker
    assert "ran" in ok and "label" in failed["error"]  # the stage's own message
    assert "variant 2 labels_per_class=1000 failed; its workspace is kept" in proc.stderr
    assert Path(failed["workspace"]).is_dir() and not Path(ok["workspace"]).exists()
    assert "failed" in proc.stdout.split("best by validation")[0]  # its row in the table

    client = MlflowClient(tracking_uri(ws))
    exp = client.get_experiment_by_name("graft").experiment_id
    (sweep,) = runs(client, exp, "tags.`graft.kind` = 'sweep'")
    assert sweep.info.status == "FAILED" and sweep.data.tags["graft.sweep.best_variant"] == "labels_per_class=4"
    children = runs(client, exp, f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}' and tags.`graft.kind` = 'pipeline'")
    assert sorted((c.data.params["data.labels_per_class"], c.info.status) for c in children) == [
        ("1000", "FAILED"), ("4", "FINISHED")]


@pytest.mark.parametrize("env, missing", [
    ({}, "no Prefect API"),
    ({"PREFECT_API_URL": "http://127.0.0.1:9/api"}, "the Prefect API http://127.0.0.1:9/api does not answer"),
])
def test_a_remote_cluster_is_refused_without_what_its_workers_need(bare_workspace, env, missing):
    workspace = bare_workspace
    env = {"PREFECT_API_URL": "", **env}
    proc = run_cli(workspace, "sweep", "-S", "finetune.lr=0.01,0.003", "--address", "tcp://127.0.0.1:9", env=env,
                   check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot sweep on the Dask cluster at tcp://127.0.0.1:9" in proc.stderr
    assert missing in proc.stderr
    assert "the tracking store sqlite:///" in proc.stderr and "MLFLOW_TRACKING_URI" in proc.stderr
    assert "no default DVC remote" in proc.stderr
    assert not (workspace / ".graft/sweeps").exists() and not (workspace / "mlflow.db").exists()
