import pytest
import torch

from graft.config import validate_params
from graft.data.dataset import DataError, ImageDataset
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


def _dataset(per_class: list[int], classes: tuple[str, ...] = ("a", "b")) -> ImageDataset:
    """Images that hold their own index (two bytes), so that splits can be told apart and checked for overlap."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(per_class)])
    index = torch.arange(len(labels))
    images = torch.stack([index // 256, index % 256], dim=1).to(torch.uint8).reshape(-1, 1, 1, 2)
    return ImageDataset(images, labels, list(classes))


def _rows(ds: ImageDataset) -> set[bytes]:
    return {bytes(img.numpy().tobytes()) for img in ds.images}


def _params(**prepare_params):
    return validate_params(merge(tiny_params_dict(), {"data": {"labels_per_class": 3}, "prepare": prepare_params}))


def test_test_size_all_takes_every_image_validation_and_the_budget_leave():
    ds = _dataset([10, 7])
    splits = prepare.split_target(ds, _params(target_val_per_class=2, target_test_per_class="all"))
    counts = {name: split.labels.bincount().tolist() for name, split in splits.items()}
    assert counts == {"train": [3, 3], "val": [2, 2], "test": [5, 2]}
    rows = [_rows(split) for split in splits.values()]
    assert sum(map(len, rows)) == len(ds) and set().union(*rows) == _rows(ds)  # disjoint, and nothing left over


def test_test_size_all_needs_an_image_left_for_test():
    with pytest.raises(DataError, match=r"\{'b': 5\}.*target_test_per_class \(all: at least one image left\) = 6"):
        prepare.split_target(_dataset([10, 5]), _params(target_val_per_class=2, target_test_per_class="all"))


@pytest.mark.parametrize("test_size,expected", [(3, [3, 3]), ("all", [6, 4])])
def test_target_with_its_own_test_files_is_tested_on_them(test_size, expected):
    ds, test = _dataset([8, 8]), _dataset([6, 4])
    splits = prepare.split_target(ds, _params(target_val_per_class=2, target_test_per_class=test_size), test)
    assert splits["test"].labels.bincount().tolist() == expected
    assert _rows(splits["test"]) <= _rows(test)
    assert splits["train"].labels.bincount().tolist() == [3, 3] and splits["val"].labels.bincount().tolist() == [2, 2]


def test_target_test_files_too_small_for_the_test_size_is_a_clear_error():
    with pytest.raises(DataError, match=r"target's test files have too few images of \{'b': 4\}.*set it to all"):
        prepare.split_target(_dataset([8, 8]), _params(target_val_per_class=2, target_test_per_class=5),
                             _dataset([6, 4]))


def test_source_with_its_own_test_files_carves_only_validation():
    ds, test = _dataset([20, 10]), _dataset([3, 2])
    splits = prepare.split_source(ds, _params(source_val_fraction=0.1, source_test_fraction=0.2), test)
    assert splits["val"].labels.bincount().tolist() == [2, 1]
    assert splits["train"].labels.bincount().tolist() == [18, 9]  # nothing held out for test
    assert _rows(splits["test"]) == _rows(test)


@pytest.mark.parametrize("shape", [(300, 3, 28, 28), (129, 3, 5, 7), (1, 3, 3, 3), (40, 3, 1, 1), (50, 1, 16, 16)])
@pytest.mark.parametrize("threads", [1, 2])
def test_channel_stats_are_the_bits_of_the_whole_tensor_reduction(shape, threads):
    """channel_stats works chunk by chunk; the manifest must still hold exactly what the whole float tensor gives."""
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(shape[0]))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = images.float().div_(255.0)
        expected = x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        got = prepare.channel_stats(ImageDataset(images, torch.zeros(shape[0], dtype=torch.int64), ["a"]))
    finally:
        torch.set_num_threads(before)
    assert got == expected
