"""Finished pipeline runs shared by the end-to-end modules that only read them (a full run is slow)."""

from __future__ import annotations

import pytest

from graft.cli import main as graft
from tests.conftest import make_workspace


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, prefect_server):
    """One workspace, two pipeline runs that differ in finetune.lr (test_registry compares, predicts from and
    reproduces them; test_dvc_tools reads the second with DVC's own commands). Tests may add files to it but
    must not change its outputs, params or tracking store."""
    workspace = make_workspace(tmp_path_factory.mktemp("registry") / "ws")
    assert graft(["-C", str(workspace), "run"]) == 0
    assert graft(["-C", str(workspace), "run", "-S", "finetune.lr=0.004"]) == 0
    return workspace
