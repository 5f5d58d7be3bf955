"""The tracking store is deleted after a run: DVC still says "up to date", graft notices that the model
version metrics/register.json names is gone, says so, and re-records it from the DVC-tracked models."""

from __future__ import annotations

import shutil

import pytest

from graft import tracking
from graft.cli import main as graft
from graft.files import read_json
from graft.store_check import lost_record
from tests.conftest import copy_workspace, dvc, graft_in_process

pytestmark = pytest.mark.e2e


@pytest.fixture
def finished(two_runs, tmp_path):
    """A private copy of a finished workspace (its store may be deleted here)."""
    return copy_workspace(two_runs, tmp_path / "ws")


def test_a_deleted_store_is_noticed_and_re_recorded(finished, capsys, prefect_server):
    named = read_json(finished / "metrics/register.json")
    assert lost_record(finished, tracking.tracking_uri(finished)) is None  # the store holds it
    (finished / "mlflow.db").unlink()
    shutil.rmtree(finished / "mlartifacts")
    lost = lost_record(finished, tracking.tracking_uri(finished))
    assert lost and f"version {named['version']}" in lost and "does not exist" in lost
    assert f"tracking  {lost}" in graft_in_process(capsys, finished, "status", check=True).stdout

    capsys.readouterr()
    assert graft(["-C", str(finished), "run"]) == 0
    out = capsys.readouterr().out
    assert "DVC says every stage is up to date, but" in out and "Re-recording it" in out
    assert [k for k, v in read_json(finished / ".graft/last_run.json").items() if v["status"] == "ran"] == ["register"]
    assert "epoch" not in out  # nothing retrained
    record = read_json(finished / "metrics/register.json")
    version = tracking.resolve_version(finished, f"models:/{record['model_name']}/{record['version']}")
    assert "champion" in version["aliases"]  # the only version, so the champion
    assert lost_record(finished, tracking.tracking_uri(finished)) is None
    assert dvc(finished, "status").stdout.strip() in ("", "Data and pipelines are up to date.")
    capsys.readouterr()
    assert graft(["-C", str(finished), "run"]) == 0
    assert "Pipeline is up to date" in capsys.readouterr().out  # mended once, then quiet


def test_a_reset_store_is_noticed_too(finished):
    """An empty new store in the same place (a reset, or a new server's database)."""
    (finished / "mlflow.db").unlink()
    tracking.client_for(finished).search_experiments()  # MLflow makes a fresh, empty store
    lost = lost_record(finished, tracking.tracking_uri(finished))
    assert lost and "was reset or replaced" in lost
