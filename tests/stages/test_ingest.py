import json

import pytest
import torch

from graft.config import validate_params
from graft.data.dataset import DataError
from graft.data.store import load_dataset
from graft.paths import Paths
from graft.stages import ingest
from tests.conftest import tiny_params_dict


def with_target(target: dict):
    raw = tiny_params_dict()
    raw["ingest"]["target"] = target
    return validate_params(raw)


def test_writes_both_domains(tmp_path, tiny_params):
    summary = ingest.run(tiny_params, Paths.at(tmp_path))
    source = load_dataset(tmp_path / "data/raw/source")
    target = load_dataset(tmp_path / "data/raw/target")
    assert source.classes == tiny_params.ingest.source.classes
    assert target.classes == tiny_params.ingest.target.classes
    assert source.images.shape[1:] == (3, 16, 16) and source.images.dtype == torch.uint8
    assert summary["source_images"] == 4 * 24 and summary["target_images"] == 3 * 16


def test_is_deterministic(tmp_path, tiny_params):
    ingest.run(tiny_params, Paths.at(tmp_path / "a"))
    ingest.run(tiny_params, Paths.at(tmp_path / "b"))
    for domain in ("source", "target"):
        assert (tmp_path / f"a/data/raw/{domain}.safetensors").read_bytes() == \
               (tmp_path / f"b/data/raw/{domain}.safetensors").read_bytes()


def test_imagefolder_target(tmp_path):
    from PIL import Image

    for c, colour in (("cats", (200, 10, 10)), ("dogs", (10, 200, 10))):
        (tmp_path / "data/sources/pets" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 24), colour).save(tmp_path / "data/sources/pets" / c / f"{i}.png")
    params = with_target({"kind": "imagefolder", "path": "data/sources/pets"})
    summary = ingest.run(params, Paths.at(tmp_path))
    target = load_dataset(tmp_path / "data/raw/target")
    assert target.classes == ["cats", "dogs"] and summary["target_images"] == 6
    assert target.images.shape[1:] == (3, 16, 16)


def test_bad_target_leaves_previous_raw_data_untouched(tmp_path, tiny_params):
    ingest.run(tiny_params, Paths.at(tmp_path))
    before = (tmp_path / "data/raw/source.safetensors").read_bytes()
    params = with_target({"kind": "imagefolder", "path": "data/sources/missing"})
    with pytest.raises(DataError, match="missing"):
        ingest.run(params, Paths.at(tmp_path))
    assert (tmp_path / "data/raw/source.safetensors").read_bytes() == before


def _pets_with_bad_files(root):
    """data/sources/pets under `root`: readable images, plus a text file and an empty file posing as images."""
    from PIL import Image

    folder = root / "data/sources/pets"
    for c, colour in (("cats", (200, 10, 10)), ("dogs", (10, 200, 10))):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20 + i, 24), colour).save(folder / c / f"{i}.png")
    (folder / "cats" / "notes.jpg").write_text("this is text, not a picture")
    (folder / "dogs" / "empty.png").write_bytes(b"")


def test_skipped_files_are_recorded_relative_to_the_repository(tmp_path):
    """data/raw/ is tracked by DVC: the same sources in clones at different places give the same bytes."""
    raw = tiny_params_dict()
    raw["ingest"]["target"] = {"kind": "imagefolder", "path": "data/sources/pets"}
    raw["ingest"]["bad_files"] = "skip"
    params = validate_params(raw)
    roots = [tmp_path / "a", tmp_path / "somewhere" / "much" / "deeper" / "clone"]
    for root in roots:
        _pets_with_bad_files(root)
        summary = ingest.run(params, Paths.at(root))
        assert summary["target_skipped"] == 2 and summary["target_images"] == 6
    first, second = ((root / "data/raw/target.json").read_bytes() for root in roots)
    assert first == second
    sidecar = json.loads(first)
    assert [s["path"] for s in sidecar["skipped"]] == ["data/sources/pets/cats/notes.jpg",
                                                       "data/sources/pets/dogs/empty.png"]
    assert str(tmp_path) not in first.decode()


def test_skipped_files_outside_the_repository_stay_absolute(tmp_path):
    outside = tmp_path / "elsewhere" / "x.png"
    inside = tmp_path / "repo" / "data" / "sources" / "x.png"
    assert ingest.repo_relative({"path": str(outside), "reason": "r"}, tmp_path / "repo")["path"] == str(outside)
    record = ingest.repo_relative({"path": str(inside), "reason": f"{inside}: truncated"}, tmp_path / "repo")
    assert record == {"path": "data/sources/x.png", "reason": "data/sources/x.png: truncated"}
