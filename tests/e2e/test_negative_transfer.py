"""Negative transfer through the real pipeline: a backbone from a source unrelated to the target loses to the
from-scratch control on validation, and graft registers the control instead, saying why."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from graft.files import read_json
from graft.tracking import tracking_uri
from tests.conftest import graft_in_process

pytestmark = pytest.mark.e2e


def unrelated_weights(ws, params) -> str:
    """tiny_cnn weights that carry nothing: every tensor zero (features are the same for every image)."""
    from safetensors.torch import save_file

    from graft.models.backbones import create_backbone

    backbone = create_backbone(params["model"]["backbone"], in_channels=params["data"]["channels"],
                               image_size=params["data"]["image_size"], **params["model"]["backbone_args"])
    path = ws / "data" / "weights" / "unrelated.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().zero_().contiguous() for k, v in backbone.state_dict().items()}, str(path))
    return "data/weights/unrelated.safetensors"


def test_scratch_is_registered_when_pretraining_does_not_pay(workspace, prefect_server, capsys):
    ws = workspace
    params = yaml.safe_load((ws / "params.yaml").read_text())
    # Handwritten digits as the target: unrelated to anything the weights saw, and easy for the control to learn.
    params["ingest"]["target"] = {"kind": "sklearn_digits", "classes": ["0", "1", "7"]}
    params["data"]["labels_per_class"] = 10
    params["prepare"].update(target_val_per_class=10, target_test_per_class=20)
    params["pretrain"]["weights"] = unrelated_weights(ws, params)
    params["finetune"]["epochs"] = 10
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = graft_in_process(capsys, ws, "run", check=True).stdout
    evaluation = read_json(ws / "metrics/evaluate.json")
    assert evaluation["negative_transfer"] is True and evaluation["better_on_val"] == "scratch"
    assert evaluation["baseline_val_acc"] > evaluation["val_acc"]
    decision = read_json(ws / "metrics/register.json")
    assert decision["candidate"] == "scratch" and decision["promote"] is True
    assert "negative transfer: the from-scratch control beats the fine-tuned model on validation" in out
    assert "champion), the from-scratch control" in out

    client = MlflowClient(tracking_uri(ws))
    version = client.get_model_version("graft-classifier", decision["version"])
    assert version.tags["graft.candidate"] == "scratch" and version.tags["graft.strategy"] == "from_scratch"
    exp = client.get_experiment_by_name("graft")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`graft.kind` = 'pipeline'")
    assert parent.data.tags["graft.transfer"].startswith("negative transfer")
    # The registered model's lineage still leads back to this pipeline run.
    assert version.tags["graft.pipeline_run_id"] == parent.data.tags["graft.pipeline_run_id"]
