"""`graft promote` moves the champion by hand (tags say why and from where), and `graft predict` warns when
the champion's classes are not the current target's. In-process, on two versions registered by `register`."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from graft.cli import main as graft
from graft.stages import register
from graft.tracking import tracking_uri
from tests.conftest import REPO, tiny_params_dict
from tests.stages.test_register import finetuned  # noqa: F401  the fixture

NAME = "graft-classifier"


@pytest.fixture
def two_versions(finetuned, tiny_params):  # noqa: F811
    """v1 champion, v2 challenger, in a folder the CLI accepts (params.yaml and dvc.yaml at its root)."""
    assert tiny_params.tracking.model_name == NAME
    register.run(tiny_params, finetuned)
    register.run(tiny_params, finetuned)
    (finetuned.root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    shutil.copy2(REPO / "dvc.yaml", finetuned.root / "dvc.yaml")
    client = MlflowClient(tracking_uri(finetuned.root))
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    return finetuned


def test_promote_moves_the_champion_and_records_why(two_versions, capsys):
    root = str(two_versions.root)
    assert graft(["-C", root, "promote", "2", "--reason", "target classes changed"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{NAME}: champion moved from v1 to v2 by hand (target classes changed)"]
    client = MlflowClient(tracking_uri(two_versions.root))
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["graft.promoted_by_hand"] == "target classes changed" and tags["graft.previous_champion"] == "1"
    assert "graft.promoted_at" in tags
    assert "graft.promoted_by_hand" not in client.get_model_version(NAME, "1").tags

    assert graft(["-C", root, "promote", "v2", "--reason", "again"]) == 0
    assert capsys.readouterr().out.strip() == f"{NAME} v2 is already the champion; nothing moved"
    assert client.get_model_version(NAME, "2").tags["graft.promoted_by_hand"] == "target classes changed"


def test_promote_says_what_was_wrong(two_versions, capsys, monkeypatch):
    root = str(two_versions.root)
    assert graft(["-C", root, "promote", "7", "--reason", "why not"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("graft: error: ") and "no version 7" in err and "its versions are 1, 2" in err, err

    assert graft(["-C", root, "promote", "2", "--reason", "  "]) == 2
    assert "--reason is empty" in capsys.readouterr().err
    assert graft(["-C", root, "promote", "latest", "--reason", "x"]) == 2
    assert "expected a version number" in capsys.readouterr().err

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    assert graft(["-C", root, "promote", "2", "--reason", "x"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9 is not reachable" in err and "Traceback" not in err, err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    client = MlflowClient(tracking_uri(two_versions.root))
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"  # nothing moved


def _set_target_classes(paths, classes):
    manifest = paths.prepared("target") / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "classes": classes}))
    return data["classes"]


def test_predict_warns_when_the_champion_has_other_classes(two_versions, capsys):
    root = two_versions.root
    image = root / "photo.png"
    Image.new("RGB", (20, 20), (250, 0, 0)).save(image)

    assert graft(["-C", str(root), "predict", str(image)]) == 0
    assert capsys.readouterr().err == ""  # same classes: no warning

    old = _set_target_classes(two_versions, ["cat", "dog", "fox"])
    assert graft(["-C", str(root), "predict", str(image)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, captured.err
    assert f"{NAME} v1 (champion)" in warnings[0] and str(old) in warnings[0]
    assert "['cat', 'dog', 'fox']" in warnings[0] and "a new `graft run`" in warnings[0]
    out = captured.out.splitlines()
    assert out[0].startswith(f"{NAME} v1") and len(out) == 2 and out[1].endswith("%")  # predictions still print

    # A registered version with the target's classes: the warning names it for `graft promote`.
    client = MlflowClient(tracking_uri(root))
    client.set_model_version_tag(NAME, "2", "graft.classes", json.dumps(["cat", "dog", "fox"]))
    assert graft(["-C", str(root), "predict", str(image)]) == 0
    warning = capsys.readouterr().err
    assert "`graft promote 2 --reason ...`" in warning and warning.count("\n") == 1, warning
