"""Crash and resume on the streamed path: pretraining on a source stored as WebDataset shards, killed with
SIGKILL after its first epoch, resumes when rerun and ends bit-identical to a run never interrupted (the order
and augmentation of each epoch are functions of (seed, stage, epoch, rank), not of what ran before)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import copy_workspace, dvc, make_workspace
from tests.faults.test_resume import (_checkpoint_epoch, _kill_dvc_repro_pretrain_after, assert_same_pretraining,
                                     ingest_and_prepare, straight_pretraining)
from tests.stages.test_sharded_source import jpeg_folder

pytestmark = pytest.mark.faults

EPOCHS = 12


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workspace whose source is a JPEG folder stored as shards, with augmentation on; `dvc repro prepare` ran."""
    ws = make_workspace(tmp_path_factory.mktemp("resume_streamed") / "ws")
    jpeg_folder(ws / "data/sources/photos", per_class=40)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["ingest"]["source"] = {"kind": "imagefolder", "path": "data/sources/photos"}
    params["ingest"].update(storage="shards", shard_samples=16)
    params["pretrain"].update(epochs=EPOCHS, augment={"crop_padding": 2, "flip": True, "trivial_augment": True})
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ingest_and_prepare(ws)
    assert json.loads((ws / "data/prepared/source/manifest.json").read_text())["storage"] == "shards"
    return ws


def test_killed_streamed_pretraining_resumes_bit_identical(prepared, tmp_path):
    interrupted = copy_workspace(prepared, tmp_path / "interrupted")
    _kill_dvc_repro_pretrain_after(interrupted, 1)
    killed_at = _checkpoint_epoch(interrupted)
    assert 1 <= killed_at < EPOCHS
    assert not (interrupted / "metrics/pretrain.json").exists()

    resumed = dvc(interrupted, "repro", "pretrain").stdout
    assert "pretrain: resuming after epoch" in resumed, resumed

    assert_same_pretraining(interrupted, straight_pretraining(prepared, tmp_path / "straight"))
