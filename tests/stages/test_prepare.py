import pytest

from graft.config import validate_params
from graft.data.dataset import DataError
from graft.data.store import load_dataset
from graft.files import read_json
from graft.paths import Paths
from graft.stages import ingest, prepare
from tests.conftest import merge, tiny_params_dict


def test_splits_respect_label_budget_and_are_disjoint(prepared_root):
    target = {s: load_dataset(prepared_root / f"data/prepared/target/{s}") for s in ("train", "val", "test")}
    assert target["train"].labels.bincount().tolist() == [4, 4, 4]  # data.labels_per_class
    assert target["val"].labels.bincount().tolist() == [4, 4, 4]
    assert target["test"].labels.bincount().tolist() == [8, 8, 8]
    seen = set()
    for ds in target.values():
        rows = {bytes(img.numpy().tobytes()) for img in ds.images}
        assert not rows & seen
        seen |= rows
    manifest = read_json(prepared_root / "data/prepared/target/manifest.json")
    assert manifest["label_budget"] == 4 and manifest["counts"] == {"train": 12, "val": 12, "test": 24}
    assert len(manifest["mean"]) == 3 and all(s > 0 for s in manifest["std"])


def test_test_split_does_not_move_with_the_budget(tmp_path):
    def test_hash(budget):
        root = tmp_path / f"b{budget}"
        params = validate_params(merge(tiny_params_dict(), {"data": {"labels_per_class": budget}}))
        ingest.run(params, Paths.at(root))
        prepare.run(params, Paths.at(root))
        return read_json(root / "data/prepared/target/manifest.json")["hashes"]["test"]

    assert test_hash(2) == test_hash(4)


def test_budget_above_available_images_is_a_clear_error(tmp_path):
    params = validate_params(merge(tiny_params_dict(), {"data": {"labels_per_class": 50}}))
    ingest.run(params, Paths.at(tmp_path))
    with pytest.raises(DataError, match="data.labels_per_class \\(50\\)"):
        prepare.run(params, Paths.at(tmp_path))
