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

from graft import pending, tracking
from graft.cli import main as graft


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(db, artifacts, port) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
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
def test_up_to_date_report_mentions_owed_entries(workspace, owed):
    for step in range(owed):
        pending.owe(workspace, "run123", {"kind": "metrics", "step": step, "timestamp": 0, "values": {"x": 1.0}})
    from tests.conftest import run_cli

    err = run_cli(workspace, "run", "--dry-run").stderr + run_cli(workspace, "status", check=False).stderr
    assert (f"{owed} tracking entries are still owed" in err) == bool(owed)
