"""graft, unchanged, against a team's MLflow server: a real `mlflow server` on a real PostgreSQL, artifacts
served from a folder by the server. Two `graft run`s with MLFLOW_TRACKING_URI set (the second re-scores the
champion through the server), then what users read back."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from graft.cli import main as graft
from graft.files import read_json
from tests.conftest import make_workspace
from tests.tracking.conftest import sql

pytestmark = pytest.mark.e2e

STAGES = ["ingest", "prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate", "register"]
RERUN = ["evaluate", "finetune", "register"]  # what `-S finetune.lr=...` makes stale
GATE_TAGS = ("graft.gate.promote", "graft.gate.p_value", "graft.gate.test_hash", "graft.gate.reason",
             "graft.git_commit", "graft.data_hash", "graft.classes")


@pytest.fixture(scope="module")
def team_run(tmp_path_factory, prefect_server, mlflow_on_postgres):
    """A workspace after two `graft run`s against the server, the second with another finetune.lr;
    MLFLOW_TRACKING_URI stays set for the module's tests."""
    ws = make_workspace(tmp_path_factory.mktemp("team") / "ws", store=False)  # no local store: it must stay so
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_on_postgres.uri)
        for extra in ([], ["-S", "finetune.lr=0.004"]):
            assert graft(["-C", str(ws), "run", *extra]) == 0, mlflow_on_postgres.log.read_text()[-4000:]
        yield ws


def champion(uri: str) -> str:
    return MlflowClient(uri).get_model_version_by_alias("graft-classifier", "champion").version


def test_the_server_migrated_its_schema_on_postgres(mlflow_on_postgres):
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert sql(mlflow_on_postgres.backend, "SELECT version_num FROM alembic_version") == [
        (_get_latest_schema_revision(),)]
    tables = {t for (t,) in sql(mlflow_on_postgres.backend,
                                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"experiments", "runs", "metrics", "params", "tags", "registered_models", "model_versions",
            "registered_model_aliases"} <= tables


def test_runs_metrics_and_the_registry_land_on_the_server(team_run, mlflow_on_postgres):
    ws, server = team_run, mlflow_on_postgres
    assert not (ws / "mlflow.db").exists() and not (ws / "mlartifacts").exists()  # nothing went to the local store

    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("graft")
    parents = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline'",
                                 order_by=["attributes.start_time ASC"])
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    first, second = parents
    evaluation = read_json(ws / "metrics/evaluate.json")
    assert second.data.metrics["transfer_gain"] == pytest.approx(evaluation["transfer_gain"], abs=1e-4)
    assert second.data.metrics["test_acc"] == pytest.approx(evaluation["test_acc"], abs=1e-4)
    assert float(second.data.params["finetune.lr"]) == 0.004 and second.data.tags["graft.git_commit"] != "unknown"

    def stages(parent):
        return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")

    assert sorted(r.data.tags["graft.stage"] for r in stages(first)) == sorted(STAGES)
    assert sorted(r.data.tags["graft.stage"] for r in stages(second)) == RERUN
    finetune = next(r for r in stages(second) if r.data.tags["graft.stage"] == "finetune")
    kept_epochs = read_json(ws / "metrics/finetune.json")["epochs"]  # auto's kept candidate: 2 epochs, or 4 for lp_ft
    assert [m.step for m in client.get_metric_history(finetune.info.run_id, "train_loss")] == \
        list(range(1, kept_epochs + 1))

    # Artifacts went through the server into its artifact root, not into the workspace.
    assert second.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert {"pipeline", "metrics", "model_card.md"} <= {a.path for a in client.list_artifacts(second.info.run_id)}
    assert len(list(server.artifacts.rglob("model_card.md"))) == 2 and len(list(server.artifacts.rglob("MLmodel"))) == 2

    # The gate re-scored the champion (v1, its model loaded through the server) and recorded its decision.
    v2 = client.get_model_version("graft-classifier", "2")
    for tag in GATE_TAGS:
        assert tag in v2.tags, tag
    expected_champion = "2" if v2.tags["graft.gate.promote"] == "True" else "1"
    assert champion(server.uri) == expected_champion and v2.aliases and "challenger" in v2.aliases
    assert str(read_json(ws / "metrics/register.json")["version"]) == "2"

    # And it is PostgreSQL that holds them.
    candidates = 2 * len(read_json(ws / "metrics/finetune.json")["candidates"])  # auto's, under each finetune run
    assert sql(server.backend, "SELECT count(*) FROM runs WHERE experiment_id = %s", int(exp.experiment_id)) == [
        (2 + len(STAGES) + len(RERUN) + candidates,)]
    assert sql(server.backend, "SELECT alias, version FROM registered_model_aliases ORDER BY alias") == [
        ("challenger", 2), ("champion", int(expected_champion))]


def test_lineage_status_and_predict_through_the_server(team_run, mlflow_on_postgres, capsys):
    ws = team_run

    def cli(*args: str) -> str:
        capsys.readouterr()
        assert graft(["-C", str(ws), *args]) == 0
        return capsys.readouterr().out

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout.strip()
    lineage = cli("lineage", "models:/graft-classifier@challenger")
    assert lineage.startswith("graft-classifier version 2  aliases: challenger")
    assert f"git commit    {head}" in lineage and "finetune.lr = 0.004" in lineage

    version = champion(mlflow_on_postgres.uri)
    status = cli("status")
    assert "all up to date" in status and f"champion  graft-classifier v{version}" in status

    from PIL import Image

    image = ws / "photo.png"
    Image.new("RGB", (40, 30), (250, 0, 0)).save(image)
    out = cli("predict", str(image)).splitlines()
    assert out[0].startswith(f"graft-classifier v{version}") and len(out) == 2 and out[1].endswith("%")
