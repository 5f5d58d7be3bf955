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
