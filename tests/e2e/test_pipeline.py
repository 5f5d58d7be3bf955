"""End-to-end: the real Prefect flow, real `dvc repro` / `dvc status`, a real MLflow sqlite store, tiny data.

The first `graft run` is the session's one_run (tests/conftest.py), which other modules share; what it left is
checked here."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from graft.cli import main as graft
from graft.files import read_json
from graft.tracking import tracking_uri
from tests.conftest import dvc, graft_in_process, run_cli, tiny_params_dict

pytestmark = pytest.mark.e2e

STAGES = ["ingest", "prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate", "register"]


def statuses(ws):
    return {k: v["status"] for k, v in read_json(ws / ".graft/last_run.json").items()}


def ran(ws):
    return [k for k, v in statuses(ws).items() if v == "ran"]


def assert_dvc_clean(ws):
    out = dvc(ws, "status").stdout
    assert "up to date" in out, out


def test_graft_run_records_everything_and_dvc_agrees(one_run):
    ws = one_run  # after one `graft run` in a fresh workspace
    assert ran(ws) == STAGES
    assert_dvc_clean(ws)

    # Nothing stale: graft says so without importing torch, Prefect or MLflow.
    probe = ("import sys; from graft.cli import main; rc = main(['-C', sys.argv[1], 'run']); "
             "print('HEAVY', sorted(m for m in ('torch', 'prefect', 'mlflow') if m in sys.modules)); sys.exit(rc)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", probe, str(ws)], capture_output=True, text=True, check=True)
    assert "up to date" in proc.stdout and "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    for line in ("transfer gain", "target accuracy, fine-tuned", "registered model", "graft-classifier v1",
                 "fine-tuning recipe", "(auto, best validation accuracy of 3:", "labels used",
                 "24 (12 to train, 12 to validate", "verdict (validation)"):
        assert line in proc.stdout, line

    # MLflow: one parent run with a nested run per stage, per-epoch losses, a champion.
    client = MlflowClient(tracking_uri(ws))
    exp = client.get_experiment_by_name("graft")
    parents = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["graft.git_commit"] != "unknown" and parent.data.tags["graft.data_hash"]
    assert parent.data.params["finetune.lr"] == tiny_params_dict()["finetune"]["lr"] == "auto"
    evaluation = read_json(ws / "metrics/evaluate.json")
    assert parent.data.metrics["transfer_gain"] == pytest.approx(evaluation["transfer_gain"], abs=1e-4)
    assert parent.data.tags["graft.transfer"] == evaluation["verdict"]
    chosen = read_json(ws / "metrics/finetune.json")["chosen"]
    assert parent.data.tags["graft.finetune_chosen"] == chosen
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["graft.stage"] for r in children) == sorted(STAGES)
    finetune_run = next(r for r in children if r.data.tags["graft.stage"] == "finetune")
    losses = client.get_metric_history(finetune_run.info.run_id, "train_loss")
    assert [m.step for m in losses] == ([1, 2, 3, 4] if chosen == "lp_ft" else [1, 2])  # the kept candidate's
    assert finetune_run.data.params["finetune.lr"] == "auto"
    candidates = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{finetune_run.info.run_id}'")
    assert sorted(r.data.tags["graft.candidate_strategy"] for r in candidates) == ["full", "linear_probe", "lp_ft"]
    registered = read_json(ws / "metrics/register.json")["candidate"]
    assert registered == {"finetuned": "finetuned", "scratch": "scratch"}[evaluation["better_on_val"]]
    champion = client.get_model_version_by_alias("graft-classifier", "champion")
    assert str(champion.version) == "1"
    assert_mlflow_entities(client, ws, parent.info.run_id, registered, evaluation)


def test_an_override_reruns_only_what_depends_on_it_and_force_reruns_downstream(finished_copy, prefect_server):
    ws = finished_copy
    # An override reruns only what depends on it; baseline and pretrain are untouched.
    assert graft(["-C", str(ws), "run", "-S", "finetune.lr=0.005"]) == 0
    assert ran(ws) == ["finetune", "evaluate", "register"]
    assert yaml.safe_load((ws / "params.yaml").read_text())["finetune"]["lr"] == 0.005
    assert_dvc_clean(ws)
    repro = dvc(ws, "repro").stdout
    assert "didn't change" in repro or "up to date" in repro, repro
    assert "Running stage" not in repro, repro

    # --force reruns a stage and everything downstream of it.
    assert graft(["-C", str(ws), "run", "--force", "evaluate"]) == 0
    assert ran(ws) == ["evaluate", "register"]


def assert_mlflow_entities(client, ws, parent_id, candidate, evaluation):
    """What the MLflow UI shows for the pipeline run: datasets (DVC hash and path), source (git commit),
    description (model card), and the logged model with its evaluation metrics linked to it."""
    import subprocess

    from graft.modelcard import candidate_metrics

    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    md5 = {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    parent = client.get_run(parent_id)
    inputs = {d.dataset.name: d for d in parent.inputs.dataset_inputs}
    assert sorted(inputs) == ["raw", "source", "target.test", "target.train", "target.val"]
    for name, path in (("target.train", "data/prepared/target"), ("target.test", "data/prepared/target"),
                       ("source", "data/prepared/source"), ("raw", "data/raw")):
        assert inputs[name].dataset.digest == md5[path], name
        assert json.loads(inputs[name].dataset.source) == {"uri": path}, name
    assert {t.value for t in inputs["target.val"].tags if t.key == "mlflow.data.context"} == {"validation"}

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True, check=True).stdout
    assert parent.data.tags["mlflow.source.git.commit"] == head.strip()
    assert parent.data.tags["mlflow.note.content"].startswith("# graft-classifier v1\n")

    (model,) = client.search_logged_models([parent.info.experiment_id])
    assert [o.model_id for o in parent.outputs.model_outputs] == [model.model_id]  # the pipeline run shows it
    linked = {m.key: m for m in model.metrics}
    expected = candidate_metrics(evaluation, candidate)
    assert set(linked) == {key for values in expected.values() for key in values}
    for split, values in expected.items():
        for key, value in values.items():
            assert linked[key].value == pytest.approx(value), key
            assert (linked[key].dataset_name, linked[key].dataset_digest) == (f"target.{split}",
                                                                              md5["data/prepared/target"])
    version = client.get_model_version("graft-classifier", "1")
    assert version.description and client.get_registered_model("graft-classifier").description


def test_dvc_repro_then_graft_run_has_nothing_to_do(finished_copy):
    """`dvc repro` runs each stage as its own `graft stage` process (dvc.yaml's cmd) and records it in dvc.lock
    itself; graft then agrees that nothing is stale. From a finished pipeline, a training param that finetune and
    the from-scratch baseline both read reruns exactly the four stages downstream of it through DVC. (From scratch
    would be four more interpreters' imports, ~4 s each; ingest and pretrain run under `dvc repro` in
    tests/test_retrain.py and tests/faults/test_resume.py, and every stage's outputs are recorded through DVC's
    commit by each `graft run`.)"""
    ws = finished_copy
    client = MlflowClient(tracking_uri(ws))
    exp = client.get_experiment_by_name("graft")

    def run_ids(kind):
        return {r.info.run_id for r in client.search_runs([exp.experiment_id], f"tags.`graft.kind` = '{kind}'")}

    before, pipelines_before = run_ids("stage"), run_ids("pipeline")

    rerun = ["finetune", "baseline", "evaluate", "register"]
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["finetune"]["label_smoothing"] = 0.05
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(ws, "repro").stdout
    assert [s for s in STAGES if f"Running stage '{s}'" in out] == rerun, out
    proc = run_cli(ws, "run")
    assert "up to date" in proc.stdout, proc.stdout

    # Stage runs of one `dvc repro` are grouped under one pipeline run of their own.
    stage_runs = [r for r in client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'stage'")
                  if r.info.run_id not in before]
    assert sorted(r.data.tags["graft.stage"] for r in stage_runs) == sorted(rerun)
    assert len({r.data.tags["graft.pipeline_run_id"] for r in stage_runs}) == 1
    (parent,) = {r.data.tags["mlflow.parentRunId"] for r in stage_runs}
    assert run_ids("pipeline") - pipelines_before == {parent}


def test_dry_run_lists_without_running(workspace, capsys):
    proc = graft_in_process(capsys, workspace, "run", "--dry-run")
    assert proc.returncode == 0 and "would run  ingest" in proc.stdout
    assert not (workspace / "data/raw").exists()
