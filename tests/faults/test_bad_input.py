"""Bad input is refused with a clear error, before expensive work, and nothing already written is lost."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.models.io import ModelFileError, load_classifier, save_classifier
from tests.conftest import graft_in_process, run_cli, session_server_env

pytestmark = pytest.mark.faults


def _use_imagefolder_target(ws, folder: str, bad_files: str = "fail") -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["ingest"]["target"] = {"kind": "imagefolder", "path": folder}
    params["ingest"]["bad_files"] = bad_files
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _image_folder(root, classes=("cats", "dogs"), per_class=20):
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (24, 20), (10 * i, 100 if c == "cats" else 200, 50)).save(root / c / f"{i}.png")


def test_corrupt_images_are_listed_and_earlier_data_survives(workspace, capsys):
    graft_in_process(capsys, workspace, "stage", "ingest", check=True)
    before = (workspace / "data/raw/target.safetensors").read_bytes()
    folder = workspace / "data/sources/pets"
    _image_folder(folder)
    (folder / "cats" / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "dogs" / "empty.jpg").write_bytes(b"")
    _use_imagefolder_target(workspace, "data/sources/pets")

    proc = graft_in_process(capsys, workspace, "stage", "ingest")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "broken.png" in proc.stderr and "empty.jpg" in proc.stderr and "bad_files: skip" in proc.stderr
    assert (workspace / "data/raw/target.safetensors").read_bytes() == before


def test_skip_policy_counts_and_records_skipped_files(workspace, capsys):
    folder = workspace / "data/sources/pets"
    _image_folder(folder)
    (folder / "dogs" / "notes.jpg").write_text("this is text, not a picture")
    _use_imagefolder_target(workspace, "data/sources/pets", bad_files="skip")
    graft_in_process(capsys, workspace, "stage", "ingest", check=True)
    sidecar = yaml.safe_load((workspace / "data/raw/target.json").read_text())
    assert sidecar["count"] == 40
    assert [s["path"].endswith("notes.jpg") for s in sidecar["skipped"]] == [True]
    graft_in_process(capsys, workspace, "stage", "prepare", check=True)
    manifest = json.loads((workspace / "data/prepared/target/manifest.json").read_text())
    assert [s["path"].endswith("notes.jpg") for s in manifest["skipped_files"]] == [True]


def test_empty_class_folder_is_named(workspace, capsys):
    folder = workspace / "data/sources/pets"
    _image_folder(folder)
    (folder / "birds").mkdir()
    _use_imagefolder_target(workspace, "data/sources/pets")
    proc = graft_in_process(capsys, workspace, "stage", "ingest")
    assert proc.returncode == 1 and "birds" in proc.stderr


def test_unreachable_tracking_server_is_found_before_any_work(workspace, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    proc = graft_in_process(capsys, workspace, "run")
    assert proc.returncode == 1
    assert "http://127.0.0.1:9 is not reachable" in proc.stderr and "MLFLOW_TRACKING_URI" in proc.stderr
    assert not (workspace / "data/raw").exists()


def _classifier(classes=3, width=8):
    torch.manual_seed(0)
    return GraftClassifier(create_backbone("tiny_cnn", 3, 16, width=width), classes)


ARCH = {"backbone": "tiny_cnn", "backbone_args": {"width": 8}, "in_channels": 3, "image_size": 16}


def test_missing_weights_say_which_stage_writes_them(tmp_path):
    with pytest.raises(ModelFileError, match="missing; run the stage"):
        load_classifier(tmp_path / "models/finetuned.safetensors")


def test_truncated_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_classifier(path, _classifier(), ARCH, ["a", "b", "c"])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_classifier(path)


def test_wrong_architecture_names_the_differing_shapes(tmp_path):
    path = tmp_path / "m.safetensors"
    save_classifier(path, _classifier(width=8), ARCH, ["a", "b", "c"])
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["architecture"]["backbone_args"] = {"width": 16}  # the file's tensors are width 8
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="shape mismatches"):
        load_classifier(path)


def test_pickle_carrying_code_is_never_executed(tmp_path):
    import pickle

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "m.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    path.with_suffix(".json").write_text('{"kind": "classifier"}')
    with pytest.raises(ModelFileError):
        load_classifier(path)
    assert not marker.exists()


def test_failed_write_keeps_the_previous_model(stage_root, tiny_params, monkeypatch):
    """A full disk while finetune saves: the previous fine-tuned model and its sidecar stay as they were."""
    import errno

    import safetensors.torch

    from graft.paths import Paths
    from graft.stages import finetune, pretrain, replace_head

    paths = Paths.at(stage_root)
    for stage in (pretrain, replace_head, finetune):
        stage.run(tiny_params, paths)
    weights, sidecar = paths.model("finetuned"), paths.model("finetuned").with_suffix(".json")
    before = weights.read_bytes(), sidecar.read_bytes()

    def disk_full(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    params = tiny_params.model_copy(deep=True)
    params.finetune.lr = 0.005  # other params than the run that wrote the files
    with pytest.raises(OSError, match="No space left"):
        finetune.run(params, paths)
    assert (weights.read_bytes(), sidecar.read_bytes()) == before
    assert sorted(p.name for p in paths.models.iterdir() if p.name.startswith(".")) == []  # no partial files left


def test_mixed_modes_sizes_and_odd_names_are_read(workspace, capsys):
    folder = workspace / "data/sources/odd"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir(parents=True)
    modes = [("L", (30, 20)), ("RGB", (64, 64)), ("RGBA", (17, 33)), ("P", (40, 40)), ("I;16", (25, 25))]
    for i, (mode, size) in enumerate(modes):
        for cls in ("a", "b"):
            Image.new(mode, size).save(folder / cls / f"{i} é 'quoted' [x].png")
    for i in range(15):  # enough per class for the tiny label budget and splits
        for cls in ("a", "b"):
            Image.new("RGB", (20, 20), (i * 10, 0, 0)).save(folder / cls / f"extra{i}.jpg")
    _use_imagefolder_target(workspace, "data/sources/odd")
    graft_in_process(capsys, workspace, "stage", "ingest", check=True)
    sidecar = json.loads((workspace / "data/raw/target.json").read_text())
    assert sidecar["count"] == 40 and sidecar["shape"] == [3, 16, 16] and sidecar["skipped"] == []


def test_decompression_bomb_is_refused(workspace, capsys):
    folder = workspace / "data/sources/bomb"
    _image_folder(folder)
    Image.new("1", (14000, 14000)).save(folder / "cats" / "huge.png")  # 196 megapixels, a few kB on disk
    _use_imagefolder_target(workspace, "data/sources/bomb")
    proc = graft_in_process(capsys, workspace, "stage", "ingest")
    assert proc.returncode == 1 and "huge.png" in proc.stderr and "pixels" in proc.stderr, proc.stderr


def test_a_stage_error_in_graft_run_is_said_once(workspace, prefect_server, capsys):
    """Not four times inside Prefect's tracebacks: once, as graft's own error line; -v adds the tracebacks."""
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["data"]["labels_per_class"] = 500  # more than the target data has: prepare refuses
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cli(workspace, "run", check=False, env=session_server_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert out.count("data.labels_per_class (500)") == 1 and "Traceback" not in out, out
    assert proc.stderr.splitlines()[-1].startswith("graft: error: target classes with too few images"), out

    verbose = graft_in_process(capsys, workspace, "run", "-v")  # in this process: what -v adds is graft's to print
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr and "DataError" in verbose.stderr
