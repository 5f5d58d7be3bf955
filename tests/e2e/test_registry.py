"""Tracking, lineage and the registry end to end: two real pipeline runs, then the commands users reach for."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from graft.tracking import tracking_uri
from tests.conftest import graft_in_process, tiny_params_dict

pytestmark = pytest.mark.e2e

# two_runs (tests/e2e/conftest.py): one workspace after two pipeline runs that differ in finetune.lr.


def test_runs_leave_artifacts_a_model_card_and_a_registered_pyfunc(two_runs):
    client = MlflowClient(tracking_uri(two_runs))
    exp = client.get_experiment_by_name("graft")
    parents = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline'", order_by=["attributes.start_time ASC"])
    assert len(parents) == 2
    latest = parents[-1]
    files = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"pipeline", "metrics", "model_card.md"} <= files
    assert {a.path for a in client.list_artifacts(latest.info.run_id, "pipeline")} == {"pipeline/params.yaml",
                                                                                          "pipeline/dvc.lock"}
    card = client.download_artifacts(latest.info.run_id, "model_card.md")
    text = open(card).read()
    assert "## Lineage" in text and latest.data.tags["graft.git_commit"] in text
    assert latest.data.tags["graft.data_hash"].endswith(".dir")  # known once ingest is recorded

    evaluate = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}' "
                                                       "and tags.`graft.stage` = 'evaluate'")[0]
    plots = {a.path for a in client.list_artifacts(evaluate.info.run_id, "plots")}
    assert plots == {"plots/confusion.png", "plots/learning_curves.png"}
    assert "test_ece" in evaluate.data.metrics
    assert "per_class_report.json" in {a.path for a in client.list_artifacts(evaluate.info.run_id)}

    versions = client.search_model_versions("name = 'graft-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    second = client.get_model_version("graft-classifier", "2")
    for tag in ("graft.gate.promote", "graft.gate.p_value", "graft.gate.test_hash", "graft.git_commit",
                "graft.data_hash", "graft.classes"):
        assert tag in second.tags, tag


def test_compare_lineage_status_and_predict(two_runs, capsys):
    def graft(*args, check=True):  # in this process: what each command says is the point here
        return graft_in_process(capsys, two_runs, *args, check=check)

    out = graft("compare", "--last", "2").stdout
    header, first, second = out.splitlines()[:3]
    assert "finetune.lr" in header and "test_acc" in header and "transfer_gain" in header
    default_lr = str(tiny_params_dict()["finetune"]["lr"])
    assert first.split()[3] == "0.004" and second.split()[3] == default_lr  # newest first; the differing param
    assert "seed" not in header
    assert (two_runs / ".graft/compare.png").read_bytes().startswith(b"\x89PNG")

    lineage = graft("lineage").stdout
    commit = graft("lineage", "models:/graft-classifier/2").stdout
    assert "graft-classifier version 1" in lineage and "aliases: champion" in lineage
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=two_runs, capture_output=True, text=True).stdout.strip()
    assert f"git commit    {head}" in commit and "finetune.lr = 0.004" in commit
    assert "uncommitted" not in commit

    status = graft("status").stdout
    assert "all up to date" in status and "champion  graft-classifier v1" in status

    from PIL import Image

    images = []
    for i, colour in enumerate([(250, 0, 0), (0, 0, 250)]):
        path = two_runs / f"photo {i}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        images.append(str(path))
    out = graft("predict", *images).stdout.splitlines()
    assert out[0].startswith("graft-classifier v1")
    classes = ("circle_checker", "square_dots", "triangle_solid")
    assert len(out) == 3 and all(any(c in line for c in classes) and line.endswith("%") for line in out[1:])

    bad = graft("predict", str(two_runs / "missing.png"), check=False)
    assert bad.returncode == 1 and "missing.png" in bad.stderr and "Traceback" not in bad.stderr


def test_reproduce_the_champion_exactly(two_runs, capsys):
    proc = graft_in_process(capsys, two_runs, "reproduce", "models:/graft-classifier/2", check=True)
    assert "exact match" in proc.stdout, proc.stdout + proc.stderr
    assert "evaluate.test_acc" in proc.stdout
    # Every number counts, the per-class report's too (no DVC metric, so it is read from the evaluate run).
    from graft.files import read_json
    from graft.reproduce import COMPARED, _numbers

    headline = sum(len(_numbers(read_json(two_runs / "metrics" / f"{stage}.json"))) for stage in COMPARED)
    per_class = len(_numbers(read_json(two_runs / "reports" / "evaluate_per_class.json")))
    assert per_class == 2 * 3 * 4  # two models, three classes, precision / recall / F1 / support
    assert f"all {headline + per_class} metrics reproduced" in proc.stdout, proc.stdout
    # Nothing was registered by the rerun.
    client = MlflowClient(tracking_uri(two_runs))
    assert len(client.search_model_versions("name = 'graft-classifier'")) == 2
