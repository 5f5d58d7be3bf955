"""The tracking server goes away mid-run: training goes on, the entries it owes are kept, and
`graft log --pending` sends them once the server is back. A real MLflow server, really stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from graft import tracking
from graft.cli import main as graft
from graft.tracking import pending
from tests.conftest import add_empty_store

pytestmark = pytest.mark.faults


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(db, artifacts, port) -> subprocess.Popen:
    """`mlflow server` on a sqlite store. A new store starts as a copy of one already migrated (the migration is
    the server's, and graft's, 4 s of first start-up); MLflow's job runner (a pool of huey consumer processes
    for its GenAI jobs, nothing that tracking uses) is left off."""
    if not db.exists():
        add_empty_store(db.parent, db.name)
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                                         "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)


def _stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_entries_owed_during_an_outage_are_sent_later(workspace, tmp_path, monkeypatch):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("GRAFT_TRACKING_RETRIES", "2")
    monkeypatch.setenv("GRAFT_TRACKING_BACKOFF", "0.05")
    db, artifacts = tmp_path / "server.db", tmp_path / "artifacts"
    server = _start_server(db, artifacts, port)
    try:
        with tracking.stage_run(workspace, "outage", "finetune", None, {"finetune.lr": 0.01}, {}) as run_id:
            tracking.log_epoch({"epoch": 1, "train_loss": 0.9})
            _stop_server(server)
            tracking.log_epoch({"epoch": 2, "train_loss": 0.5})  # training carries on
            tracking.log_epoch({"epoch": 3, "train_loss": 0.3})
        assert pending.count(workspace) == 3  # two epochs and the run's end

        # Up-to-date reports and `graft log` say what is owed.
        server = _start_server(db, artifacts, port)
        assert graft(["-C", str(workspace), "log", "--pending"]) == 0
        assert pending.count(workspace) == 0
        client = MlflowClient(uri)
        assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2, 3]
        assert client.get_run(run_id).info.status == "FINISHED"
    finally:
        if server.poll() is None:
            _stop_server(server)


def test_graft_log_with_nothing_owed(workspace, capsys):
    assert graft(["-C", str(workspace), "log", "--pending"]) == 0
    assert "no tracking entries are owed" in capsys.readouterr().out


@pytest.mark.parametrize("owed", [0, 2])
def test_up_to_date_report_mentions_owed_entries(workspace, owed, capsys):
    for step in range(owed):
        pending.owe(workspace, "run123", {"kind": "metrics", "step": step, "timestamp": 0, "values": {"x": 1.0}})
    from tests.conftest import graft_in_process

    dry, status = graft_in_process(capsys, workspace, "run", "--dry-run"), graft_in_process(capsys, workspace, "status")
    assert dry.returncode == 0, dry.stderr
    err = dry.stderr + status.stderr
    assert (f"{owed} tracking entries are still owed" in err) == bool(owed), err


# ---------------------------------------------------------------- a real stage, a real server killed under it

@pytest.fixture
def outage(stage_root, tmp_path, monkeypatch):
    """A stage root with dvc.yaml, pointed at a real MLflow server that is not up yet: `outage.start()` starts it,
    `outage.stop()` kills it. (Each start is ~5 s of CPU; a test that needs the server down first starts none.)"""
    import shutil
    from types import SimpleNamespace

    import yaml

    from graft.config import load_params
    from tests.conftest import REPO, merge, tiny_params_dict

    shutil.copy(REPO / "dvc.yaml", stage_root / "dvc.yaml")
    (stage_root / "params.yaml").write_text(yaml.safe_dump(merge(tiny_params_dict(), {"finetune": {"epochs": 3}})))
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    for key, value in {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "GRAFT_TRACKING_RETRIES": "2",
                       "GRAFT_TRACKING_BACKOFF": "0.05"}.items():
        monkeypatch.setenv(key, value)
    db, artifacts = tmp_path / "server.db", tmp_path / "artifacts"
    state = SimpleNamespace(root=stage_root, uri=uri, server=None,
                            params=load_params(stage_root / "params.yaml"))  # three epochs
    state.stop = lambda: _stop_server(state.server) if state.server and state.server.poll() is None else None

    def start():
        state.server = _start_server(db, artifacts, port)

    state.start = start
    yield state
    state.stop()


def _stage_runs(uri: str, stage: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("graft")
    return client, client.search_runs([exp.experiment_id], f"tags.`graft.stage` = '{stage}'")


def test_server_killed_during_a_real_stage_loses_nothing(outage, monkeypatch):
    """Killed after the first epoch: the stage finishes, its outputs are written, the rest of its epochs,
    its summary and its end wait in .graft/pending/, and `graft log --pending` delivers them."""
    from graft.runner import run_stage

    outage.start()

    real_log_epoch = tracking.log_epoch

    def log_then_kill(row):
        real_log_epoch(row)
        if row["epoch"] == 1:
            outage.stop()

    monkeypatch.setattr(tracking, "log_epoch", log_then_kill)
    summary = run_stage("baseline", outage.params, outage.root, None, "p-outage")
    assert (outage.root / "models/baseline.safetensors").exists() and summary["epochs"] == 3
    assert not (outage.root / ".graft/checkpoints/baseline").exists()  # the summary is recorded (owed)
    (owed,) = pending.owed(outage.root).values()
    assert [e["kind"] for e in owed] == ["metrics", "metrics", "metrics", "terminate"]  # epochs 2, 3, summary, end

    outage.start()
    assert graft(["-C", str(outage.root), "log", "--pending"]) == 0
    client, (run,) = _stage_runs(outage.uri, "baseline")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert run.data.metrics["kept_epoch"] == summary["kept_epoch"]
    assert not pending.count(outage.root) and not (outage.root / ".graft/pending/files").exists()


def test_outage_at_the_summary_keeps_it_and_only_then_drops_the_checkpoint(outage, monkeypatch):
    """The server dies just as the stage returns: the summary is kept in .graft/pending/ before the checkpoint
    is deleted. Where even that cannot be written, the stage fails and keeps its checkpoint: the rerun
    writes the same model without training again."""
    from graft.runner import run_stage
    from graft.stages import baseline

    outage.start()
    real_run = baseline.run

    def run_then_kill(params, paths):
        result = real_run(params, paths)
        outage.stop()
        return result

    monkeypatch.setattr(baseline, "run", run_then_kill)
    params = outage.params
    (outage.root / ".graft").mkdir(exist_ok=True)
    (outage.root / ".graft/pending").write_text("not a folder: nothing can be kept here")
    with pytest.raises(OSError):
        run_stage("baseline", params, outage.root, None, "p-summary")
    assert list((outage.root / ".graft/checkpoints/baseline").glob("*.pt")), "kept while the summary is unrecorded"
    written = (outage.root / "models/baseline.safetensors").read_bytes()

    (outage.root / ".graft/pending").unlink()
    outage.start()
    monkeypatch.setattr(baseline, "run", real_run)
    seen = []
    monkeypatch.setattr(tracking, "log_epoch", lambda row: seen.append(row["epoch"]))
    run_stage("baseline", params, outage.root, None, "p-summary")
    assert seen == [1, 2, 3]  # the saved history, replayed: no epoch trained again
    assert (outage.root / "models/baseline.safetensors").read_bytes() == written
    assert not (outage.root / ".graft/checkpoints/baseline").exists()


def test_a_stage_whose_run_cannot_be_made_still_runs_and_its_run_is_made_later(outage):
    from graft.runner import run_stage

    # The server is down from the start (the fixture has not started it).
    summary = run_stage("baseline", outage.params, outage.root, None, "p-down")
    (owed_id,) = pending.owed(outage.root)
    assert owed_id.startswith(tracking.PLACEHOLDER)
    outage.start()
    assert graft(["-C", str(outage.root), "log", "--pending"]) == 0
    assert graft(["-C", str(outage.root), "log", "--pending"]) == 0  # nothing twice
    client, (run,) = _stage_runs(outage.uri, "baseline")
    assert run.info.status == "FINISHED" and run.data.params["finetune.epochs"] == "3"
    assert run.data.metrics["val_acc"] == pytest.approx(summary["val_acc"])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [0, 1, 2, 3]


def test_run_creation_is_idempotent(tmp_path):
    first = tracking.start_pipeline_run(tmp_path, "graft", "p-once", {"seed": 0}, {})
    again = tracking.start_pipeline_run(tmp_path, "graft", "p-once", {"seed": 0}, {})  # a retry, a 2nd stage
    assert first == again
    client = tracking.client_for(tmp_path)
    runs = client.search_runs([client.get_experiment_by_name("graft").experiment_id], "tags.`graft.kind` = 'pipeline'")
    assert [r.info.run_id for r in runs] == [first]
