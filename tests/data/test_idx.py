"""graft.data.idx: IDX files written with struct into tmp_path."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.data.dataset import DataError
from graft.data.idx import load_idx, read_idx

_CODES = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype("int16"): 0x0B, np.dtype("int32"): 0x0C,
          np.dtype("float32"): 0x0D, np.dtype("float64"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, _CODES[arr.dtype], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _mnistlike(tmp_path: Path, n_classes: int = 4, per_class: int = 3, hw=(7, 5), gz: bool = False):
    labels = np.repeat(np.arange(n_classes, dtype=np.uint8), per_class)
    images = (labels[:, None, None] * 40 + np.zeros(hw, dtype=np.uint8)).astype(np.uint8)  # class k is all 40*k
    suffix = ".gz" if gz else ""
    return (write_idx(tmp_path / f"images-idx3-ubyte{suffix}", images, gz),
            write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels, gz), images, labels)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_round_trip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == "uint8":
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    t = read_idx(write_idx(tmp_path / "x.idx", arr, gz))
    assert t.shape == (2, 3, 4)
    np.testing.assert_array_equal(t.numpy(), arr)


def test_gzip_detected_by_magic_not_suffix(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    t = read_idx(write_idx(tmp_path / "labels-no-suffix", arr, gz=True))
    assert t.tolist() == list(range(6))


def test_truncated(tmp_path):
    data = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(DataError, match="truncated") as e:
        read_idx(tmp_path / "short")
    assert str(tmp_path / "short") in str(e.value)
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(DataError, match="longer"):
        read_idx(tmp_path / "long")
    (tmp_path / "header").write_bytes(data[:9])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / "header")
    (tmp_path / "gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(DataError, match="gzip") as e:
        read_idx(tmp_path / "gz")
    assert str(tmp_path / "gz") in str(e.value)


def test_bad_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros((2, 2), dtype=np.uint8)))
    for name, patch in [("nonzero", {0: 1}), ("dtype", {2: 0x0A})]:
        bad = bytearray(data)
        for i, v in patch.items():
            bad[i] = v
        (tmp_path / name).write_bytes(bytes(bad))
        with pytest.raises(DataError, match="bad IDX magic") as e:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match="bad IDX magic"):
        read_idx(tmp_path / "png")
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing")


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_grey_to_rgb_and_resize(tmp_path, gz):
    img_path, lab_path, images, labels = _mnistlike(tmp_path, gz=gz)
    ds = load_idx(img_path, lab_path, image_size=11, channels=3)
    assert ds.images.shape == (12, 3, 11, 11) and ds.images.dtype == torch.uint8
    assert ds.classes == ["0", "1", "2", "3"]
    assert ds.labels.tolist() == labels.tolist()
    assert torch.equal(ds.images[:, 0], ds.images[:, 1]) and torch.equal(ds.images[:, 1], ds.images[:, 2])
    # a constant image stays constant through the antialiased resize
    assert ds.images[7].unique().tolist() == [80]
    grey = load_idx(img_path, lab_path, image_size=7, channels=1)
    assert grey.images.shape == (12, 1, 7, 7)


def test_load_idx_rgb_to_grey(tmp_path):
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[0, ..., 0] = 255  # red
    images[1, ..., 2] = 255  # blue
    ds = load_idx(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", np.array([0, 1], np.uint8)), 4, 1)
    assert ds.images[:, 0, 0, 0].tolist() == [76, 29]  # ITU-R 601 luma
    rgb = load_idx(tmp_path / "i", tmp_path / "l", 4, 3)
    assert rgb.images[0, :, 1, 1].tolist() == [255, 0, 0]


def test_load_idx_subset_and_names(tmp_path):
    img_path, lab_path, _, _ = _mnistlike(tmp_path)
    ds = load_idx(img_path, lab_path, 6, 1, classes=["3", "1"])
    assert ds.classes == ["3", "1"] and ds.labels.tolist() == [1, 1, 1, 0, 0, 0]
    assert ds.images[ds.labels == 0].unique().tolist() == [120]
    named = load_idx(img_path, lab_path, 6, 1, class_names=["a", "b", "c", "d", "e"], classes=["c"])
    assert named.classes == ["c"] and len(named) == 3
    with pytest.raises(DataError, match=r"\['z'\]"):
        load_idx(img_path, lab_path, 6, 1, class_names=["a", "b", "c", "d"], classes=["z"])
    with pytest.raises(DataError, match="class_names has only 2"):
        load_idx(img_path, lab_path, 6, 1, class_names=["a", "b"])


def test_load_idx_mismatch_and_swapped(tmp_path):
    img_path, _, _, _ = _mnistlike(tmp_path)
    short = write_idx(tmp_path / "short-labels", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="5 labels for 12 images") as e:
        load_idx(img_path, short, 6, 1)
    assert str(short) in str(e.value)
    with pytest.raises(DataError, match="expected N×H×W"):
        load_idx(short, short, 6, 1)


def test_test_files_become_the_test_split(tmp_path):
    """ingest keeps an idx source's test files apart (data/raw/target_test) and prepare tests on them, carving
    only validation and the label budget out of the training files; integer classes name the labels."""
    from graft.config import validate_params
    from graft.data.store import load_dataset
    from graft.files import read_json
    from graft.paths import Paths
    from graft.stages import ingest, prepare
    from tests.conftest import merge, tiny_params_dict

    src = tmp_path / "mnist"
    src.mkdir()
    train_labels, test_labels = np.repeat(np.arange(4, dtype=np.uint8), 10), np.repeat(np.arange(4, dtype=np.uint8), 3)
    for name, labels in (("train", train_labels), ("t10k", test_labels)):
        write_idx(src / f"{name}-images-idx3-ubyte", (labels[:, None, None] * 60 + np.zeros((6, 6), np.uint8)))
        write_idx(src / f"{name}-labels-idx1-ubyte", labels)
    target = {"kind": "idx", "images": "mnist/train-images-idx3-ubyte", "labels": "mnist/train-labels-idx1-ubyte",
              "test_images": "mnist/t10k-images-idx3-ubyte", "test_labels": "mnist/t10k-labels-idx1-ubyte",
              "classes": [3, 0, 1]}
    raw = merge(tiny_params_dict(), {"prepare": {"target_test_per_class": "all"}})
    raw["ingest"]["target"] = target
    params = validate_params(raw)
    paths = Paths.at(tmp_path)
    ingest.run(params, paths)
    assert load_dataset(paths.raw_test("target")).classes == ["3", "0", "1"]
    prepare.run(params, paths)

    manifest = read_json(paths.prepared("target") / "manifest.json")
    assert manifest["counts"] == {"train": 12, "val": 12, "test": 9} and manifest["test_from"] == "test_files"
    test = load_dataset(paths.prepared("target") / "test")
    assert test.labels.bincount().tolist() == [3, 3, 3]
    grey = test.images[:, 0, 0, 0]  # class k was drawn at grey level 60*k, so each label shows where it came from
    assert {(int(label), int(g)) for label, g in zip(test.labels, grey)} == {(0, 180), (1, 0), (2, 60)}
    assert read_json(paths.prepared("source") / "manifest.json")["test_from"] == "split"


def test_test_files_without_a_training_class_are_refused(tmp_path):
    from graft.config import validate_params
    from graft.data.sources import load_source_test
    from tests.conftest import tiny_params_dict

    write_idx(tmp_path / "ti", np.zeros((4, 5, 5), np.uint8))
    write_idx(tmp_path / "tl", np.array([0, 1, 1, 0], np.uint8))
    spec = {"kind": "idx", "images": "i", "labels": "l", "test_images": "ti", "test_labels": "tl"}
    raw = tiny_params_dict()
    raw["ingest"]["target"] = spec
    params = validate_params(raw)
    with pytest.raises(DataError, match=r"test files have no class \['2'\]"):
        load_source_test(params.ingest.target, params, tmp_path, ["0", "1", "2"])
