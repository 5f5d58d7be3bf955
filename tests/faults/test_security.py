"""No secret from the environment ends up in params, tags, logs or artifacts; graft's servers bind to 127.0.0.1
(`graft ui` here; the temporary Prefect server `graft run` starts: tests/e2e/test_temporary_server.py)."""

from __future__ import annotations

import os
import sys

import pytest

from graft.cli import main as graft
from tests.conftest import SECRETS

pytestmark = pytest.mark.faults


def test_environment_secrets_never_reach_the_tracking_store(two_runs):
    """Both pipeline runs of two_runs had SECRETS in their environment (tests/conftest.py)."""
    files = [p for p in two_runs.rglob("*") if p.is_file() and p.relative_to(two_runs).parts[0] != ".git"]
    stores = [two_runs / "mlflow.db", *(p for p in files if p.relative_to(two_runs).parts[0] in ("mlartifacts", ".graft"))]
    assert len(stores) > 10
    for secret in set(SECRETS.values()):
        for path in files:  # the store, its artifacts, and every other file the runs wrote
            assert secret.encode() not in path.read_bytes(), path


def test_graft_ui_starts_the_mlflow_ui_on_loopback(bare_workspace, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(os, "execv", lambda executable, argv: started.append((executable, argv)))
    graft(["-C", str(bare_workspace), "ui"])
    ((executable, argv),) = started
    assert executable == sys.executable and argv[1:4] == ["-m", "mlflow", "ui"], argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1", argv
    assert "MLflow UI on http://127.0.0.1:5000" in capsys.readouterr().out
