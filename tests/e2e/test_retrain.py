"""Scheduled retraining end to end, against real Prefect, DVC and MLflow: a second run without new
data trains nothing and says why; new data via `graft data add` trains and registers a version
with the gate's decision; a run that fails mid-way leaves the champion where it was. Every outcome
reaches the webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from graft.data import synthetic
from graft.tracking import tracking_uri
from tests.conftest import graft_in_process, make_workspace

pytestmark = pytest.mark.e2e


def write_images(folder: Path, classes: list[str], per_class: int, seed: int, prefix: str) -> None:
    ds = synthetic.generate(classes, per_class, 16, 3, seed)
    for i, (image, label) in enumerate(zip(ds.images, ds.labels)):
        out = folder / ds.classes[int(label)]
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(out / f"{prefix}{i:03d}.png")


class Webhook:
    """A real HTTP endpoint on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def shop(tmp_path_factory, webhook, prefect_server):
    """A workspace whose target domain is an image folder under data/sources/, with a webhook set."""
    ws = make_workspace(tmp_path_factory.mktemp("retrain") / "ws")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    classes = params["ingest"]["target"]["classes"]
    params["ingest"]["target"] = {"kind": "imagefolder", "path": "data/sources/shapes", "classes": classes}
    params["retrain"]["webhook"] = "env:GRAFT_TEST_WEBHOOK"
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_images(ws / "data/sources/shapes", classes, 16, seed=0, prefix="first")
    return {"ws": ws, "classes": classes}


@pytest.fixture(autouse=True)
def webhook_env(monkeypatch, webhook):
    monkeypatch.setenv("GRAFT_TEST_WEBHOOK", webhook.url)


def versions(ws: Path) -> list[int]:
    client = MlflowClient(tracking_uri(ws))
    return sorted(int(v.version) for v in client.search_model_versions("name = 'graft-classifier'"))


def champion(ws: Path) -> str:
    return str(MlflowClient(tracking_uri(ws)).get_model_version_by_alias("graft-classifier", "champion").version)


def latest_report() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.retrain import REPORT_KEY

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[REPORT_KEY])),
                                          sort="CREATED_DESC", limit=1)
    return artifacts[0].data


def test_first_run_trains_and_a_second_without_new_data_trains_nothing(shop, webhook):
    from prefect.client.orchestration import get_client

    from flows.retrain import retrain

    ws = shop["ws"]
    first = retrain(root=str(ws))
    assert first["status"] == "trained" and first["version"] == "1" and first["promoted"]
    assert "no champion registered" in first["reason"]
    assert webhook.received[-1]["status"] == "trained"

    state = retrain(root=str(ws), return_state=True)
    second = state.result()
    assert state.is_completed() and state.message.startswith("nothing to train")
    assert second["status"] == "skipped" and "is what champion v1 was trained on" in second["reason"]
    assert second["data_hash_before"] == second["data_hash_after"] == first["data_hash_after"]
    assert versions(ws) == [1]  # nothing registered
    assert "# graft retraining: nothing to train" in latest_report()
    assert webhook.received[-1]["status"] == "skipped" and webhook.received[-1]["model_name"] == "graft-classifier"
    with get_client(sync_client=True) as client:  # the run is on record in the Prefect API, with its reason
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.is_completed() and "nothing to train" in run.state.message


def test_new_data_added_with_graft_data_add_is_trained_and_gated(shop, webhook, tmp_path, capsys):
    ws = shop["ws"]
    write_images(tmp_path / "delivery", shop["classes"], 4, seed=1, prefix="second")
    out = graft_in_process(capsys, ws, "data", "add", str(tmp_path / "delivery"), check=True).stdout
    assert "added 12 images to data/sources/shapes" in out and "git add dvc.lock" in out
    assert "stale     ingest" in graft_in_process(capsys, ws, "status", check=True).stdout

    # In this process, on the test's Prefect server: the report it publishes is read back here.
    proc = graft_in_process(capsys, ws, "retrain", check=True)
    assert "retrain: registered v2" in proc.stdout
    assert versions(ws) == [1, 2]
    tags = MlflowClient(tracking_uri(ws)).get_model_version("graft-classifier", "2").tags
    assert {"graft.gate.promote", "graft.gate.reason", "graft.gate.p_value"} <= set(tags)
    outcome = webhook.received[-1]
    assert outcome["status"] == "trained" and outcome["version"] == "2"
    assert outcome["data_hash_before"] != outcome["data_hash_after"]
    assert outcome["promoted"] == (tags["graft.gate.promote"] == "True")
    report = latest_report()
    assert outcome["data_hash_before"] in report and outcome["data_hash_after"] in report
    assert tags["graft.gate.reason"] in report and "test_acc" in report

    # Promoted or not, these data are now trained: the next scheduled run must not train them again.
    from flows.retrain import retrain

    again = retrain(root=str(ws))
    expected = "is what champion v2 was trained on" if outcome["promoted"] else "already trained into v2"
    assert again["status"] == "skipped" and expected in again["reason"], again["reason"]
    assert versions(ws) == [1, 2]


def test_a_run_that_fails_midway_leaves_the_champion_where_it_was(shop, webhook, tmp_path, monkeypatch, capsys):
    from flows.retrain import retrain
    from graft.stages import finetune

    ws = shop["ws"]
    before, versions_before = champion(ws), versions(ws)
    write_images(tmp_path / "delivery", shop["classes"], 3, seed=2, prefix="third")
    graft_in_process(capsys, ws, "data", "add", str(tmp_path / "delivery"), check=True)

    def out_of_memory(params, paths):
        raise MemoryError("injected failure: finetune ran out of memory")

    monkeypatch.setattr(finetune, "run", out_of_memory)
    with pytest.raises(MemoryError, match="injected"):
        retrain(root=str(ws))
    assert champion(ws) == before and versions(ws) == versions_before
    outcome = webhook.received[-1]
    assert outcome["status"] == "failed" and outcome["failed_stage"] == "finetune"
    assert "injected failure" in outcome["error"] and outcome["champion_after"] == before
    report = latest_report()
    assert "FAILED" in report and "`finetune`" in report and "champion was left where it was" in report
    status = graft_in_process(capsys, ws, "status", check=True).stdout
    assert "stale     finetune" in status and "FAILED in finetune" in status


def test_a_busy_workspace_is_a_failed_run_that_still_reports(shop, webhook):
    from flows.retrain import retrain
    from graft.workspace_lock import WorkspaceBusy, hold

    with hold(shop["ws"], "graft run (another process)"), pytest.raises(WorkspaceBusy):
        retrain(root=str(shop["ws"]))
    outcome = webhook.received[-1]
    assert outcome["status"] == "failed" and outcome["failed_stage"] is None
    assert "another graft process is working" in outcome["error"] and "graft run (another process)" in outcome["error"]
    assert "before any stage ran" in latest_report()
