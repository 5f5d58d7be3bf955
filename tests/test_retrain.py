"""The retraining check (graft.retrain.check_for_changes) on a real DVC repository: what counts as a change."""

from __future__ import annotations

import pytest
import yaml
from PIL import Image

from graft.config import load_params
from graft.dvc import locked_hash
from graft.retrain import ChangeCheck, check_for_changes, notify, skipped_outcome
from tests.conftest import dvc


def version(number: str, data_hash: str | None, **tags) -> dict:
    return {"version": number, "tags": {"graft.data_hash": data_hash, **tags}}


@pytest.mark.slow  # `dvc repro ingest`
def test_an_outside_folder_that_dvc_cannot_see_counts_as_a_change(workspace, tmp_path):
    feed = tmp_path / "feed"  # a folder another system writes into, outside the repository
    for cls in ("cats", "dogs"):
        (feed / cls).mkdir(parents=True)
        for i in range(16):
            Image.new("RGB", (16, 16), (15 * i, 90 if cls == "cats" else 180, 30)).save(feed / cls / f"{i}.png")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["ingest"]["target"] = {"kind": "imagefolder", "path": str(feed)}
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(workspace, "repro", "ingest")
    params = load_params(workspace / "params.yaml")
    now = locked_hash(workspace, "ingest", "data/raw")

    first = check_for_changes(workspace, params, champion=None)
    assert first.changed and any("stale stages: prepare" in r for r in first.reasons)
    assert any("no champion registered" in r for r in first.reasons) and not first.external_changed

    Image.new("RGB", (16, 16), (1, 2, 3)).save(feed / "dogs" / "arrived-overnight.png")
    arrived = check_for_changes(workspace, params, champion=version("3", now))
    assert "ingest" not in arrived.stale  # DVC cannot see the new file ...
    assert arrived.changed and arrived.external_changed == [f"target folder {feed}"]  # ... graft does


def test_what_counts_as_changed_when_every_stage_is_up_to_date(workspace, monkeypatch):
    """The decision table, with DVC's answer fixed to "all up to date" (tests/e2e/test_retrain.py asks real DVC)."""
    import graft.retrain

    monkeypatch.setattr(graft.retrain, "stale_stages", lambda root: {})
    monkeypatch.setattr(graft.retrain, "locked_hash", lambda root, stage, path: "n3w.dir")
    params = load_params(workspace / "params.yaml")

    same = check_for_changes(workspace, params, champion=version("3", "n3w.dir"))
    assert not same.changed and "is what champion v3 was trained on" in same.summary
    older = check_for_changes(workspace, params, champion=version("3", "0ld.dir"))
    assert older.changed and "differs from the data champion v3 was trained on (0ld.dir)" in older.summary
    rejected = check_for_changes(workspace, params, champion=version("3", "0ld.dir"),
                                 challenger=version("4", "n3w.dir", **{"graft.gate.reason": "p=0.4"}))
    assert not rejected.changed and "already trained into v4" in rejected.summary and "p=0.4" in rejected.summary
    lost = check_for_changes(workspace, params, champion=None, challenger=version("4", "0ld.dir"))
    assert lost.changed and "no champion registered" in lost.summary


def test_an_unreachable_webhook_is_reported_not_raised(capsys):
    outcome = skipped_outcome(check_for_changes.__globals__["ChangeCheck"](
        changed=False, reasons=["nothing new"], data_hash_now="a.dir", data_hash_champion="a.dir",
        champion_version="1"))
    assert notify("http://127.0.0.1:9/hook", outcome, "graft-classifier", timeout=2) is False
    assert "could not notify the webhook" in capsys.readouterr().err


@pytest.mark.parametrize(("stale", "external", "forced"), [
    ({}, ["/feed"], "ingest"),                       # DVC cannot see the folder: ingest must run
    ({"ingest": ["changed"]}, ["/feed"], None),      # ingest runs anyway
    ({}, [], "register"),                            # data differs from the champion's, nothing stale
    ({"finetune": ["params changed"]}, [], None),    # DVC's staleness is enough
])
def test_the_stage_a_retraining_run_forces(stale, external, forced):
    check = ChangeCheck(True, ["changed"], "new", "old", "1", stale=stale, external_changed=external)
    assert check.stage_to_force == forced
