"""No secret from the environment ends up in params, tags, logs or artifacts; graft's servers bind to 127.0.0.1."""

from __future__ import annotations

import pytest

from graft.cli import build_parser
from graft.cli import main as graft


def test_environment_secrets_never_reach_the_tracking_store(workspace, prefect_server, monkeypatch):
    secret = "s3cr3t-Token-9f2c"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secret)
    assert graft(["-C", str(workspace), "run"]) == 0
    stores = [workspace / "mlflow.db", *(p for p in (workspace / "mlartifacts").rglob("*") if p.is_file()),
              *(p for p in (workspace / ".graft").rglob("*") if p.is_file())]
    assert len(stores) > 10
    for path in stores:
        assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("command", ["ui"])
def test_servers_bind_to_loopback_by_default(command):
    args = build_parser().parse_args([command])
    assert args.host == "127.0.0.1"
