"""`graft run` takes a stale stage from DVC's run cache when the same inputs ran already, as `dvc repro` does:
the real Prefect flow, DVC and MLflow on tiny data, one finished run (a copy of the session's one_run) shared by
this module's tests."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from graft.cli import main as graft
from graft.files import read_json
from graft.tracking import tracking_uri
from tests.conftest import copy_workspace, dvc, graft_in_process, tiny_params_dict

pytestmark = pytest.mark.e2e

RESTORED = "baseline: restored from DVC's run cache (same inputs ran already)"


@pytest.fixture(scope="module")
def finished(one_run, tmp_path_factory):
    """A workspace after one full `graft run` (a copy of one_run); each test leaves it up to date again."""
    return copy_workspace(one_run, tmp_path_factory.mktemp("run_cache") / "ws")


def said(capsys, caplog, ws, *args: str) -> str:
    """What `graft ARGS` said, run in this process on the test session's Prefect server: the summary it printed,
    and the stage lines, which the flow logs through Prefect's logger (log_prints)."""
    caplog.clear()
    proc = graft_in_process(capsys, ws, *args, check=True)
    return "\n".join([proc.stdout, proc.stderr, *caplog.messages])


def statuses(ws) -> dict[str, str]:
    return {k: v["status"] for k, v in read_json(ws / ".graft/last_run.json").items()}


def assert_dvc_clean(ws):
    out = dvc(ws, "status").stdout
    assert "up to date" in out, out


def latest_pipeline_run(ws):
    client = MlflowClient(tracking_uri(ws))
    exp = client.get_experiment_by_name("graft")
    (run,) = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return client, exp, run


def test_a_deleted_output_is_restored_not_retrained(finished, capsys, caplog):
    ws = finished
    weights = ws / "models/baseline.safetensors"
    before = weights.read_bytes()
    weights.unlink()

    out = said(capsys, caplog, ws, "run")
    assert RESTORED in out, out
    assert "epoch" not in out and "baseline: running" not in out, out
    assert weights.read_bytes() == before
    assert statuses(ws)["baseline"] == "restored"
    assert {s for n, s in statuses(ws).items() if n != "baseline"} == {"up to date"}
    summary_row = next(line for line in out.splitlines() if line.startswith("baseline "))
    assert "restored" in summary_row, out
    assert_dvc_clean(ws)

    # The pipeline run says which stage came from the run cache; it has no stage run of its own.
    client, exp, parent = latest_pipeline_run(ws)
    assert parent.data.tags["graft.restored_from_run_cache"] == "baseline"
    assert not client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def test_force_trains_even_with_a_run_cache_hit(finished, capsys, caplog):
    ws = finished
    out = said(capsys, caplog, ws, "run", "--force", "baseline")
    assert "baseline: running (forced)" in out and "baseline: epoch" in out, out
    assert "restored from DVC's run cache" not in out, out
    assert statuses(ws) == {**{n: "up to date" for n in statuses(ws)},
                            "baseline": "ran", "evaluate": "ran", "register": "ran"}
    assert_dvc_clean(ws)


def test_inputs_that_ran_before_are_restored_but_register_runs_again(finished, capsys, caplog):
    """Back to params that ran already: finetune and evaluate come from the run cache; register registers a
    version again (its effect is in the MLflow registry, which the run cache cannot bring back)."""
    ws = finished
    client = MlflowClient(tracking_uri(ws))
    versions_before = len(client.search_model_versions("name = 'graft-classifier'"))
    lr = tiny_params_dict()["finetune"]["lr"]
    finetuned = (ws / "models/finetuned.safetensors").read_bytes()
    assert graft(["-C", str(ws), "run", "-S", "finetune.lr=0.005"]) == 0
    assert statuses(ws)["finetune"] == "ran"

    out = said(capsys, caplog, ws, "run", "-S", f"finetune.lr={lr}")
    assert "finetune: restored from DVC's run cache" in out and "evaluate: restored from DVC's run cache" in out, out
    assert "finetune: epoch" not in out and "register: running" in out, out
    assert (ws / "models/finetuned.safetensors").read_bytes() == finetuned
    assert {n: s for n, s in statuses(ws).items() if s != "up to date"} == {
        "finetune": "restored", "evaluate": "restored", "register": "ran"}
    assert len(client.search_model_versions("name = 'graft-classifier'")) == versions_before + 2
    assert_dvc_clean(ws)
    _, _, parent = latest_pipeline_run(ws)
    assert parent.data.tags["graft.restored_from_run_cache"] == "finetune, evaluate"


def test_dvc_repro_never_restores_register_from_its_run_cache(finished):
    """register's effect is in the MLflow registry, which DVC cannot restore: `persist` on its metric keeps
    DVC's run cache away from it, so `dvc repro` registers again rather than check out an old record."""
    ws = finished
    before = read_json(ws / "metrics/register.json")["version"]
    (ws / "metrics/register.json").unlink()
    proc = dvc(ws, "repro")
    assert "is cached" not in proc.stdout + proc.stderr
    after = read_json(ws / "metrics/register.json")["version"]
    assert int(after) == int(before) + 1  # a real registration, in this store
    assert_dvc_clean(ws)
