"""graft.data.torchvision_source with fake dataset files in tmp_path; nothing is downloaded."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from graft.data.dataset import DataError
from graft.data.torchvision_source import load_torchvision


def _idx(path: Path, arr: np.ndarray) -> None:
    assert arr.dtype == np.uint8
    path.write_bytes(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def fake_mnist(root: Path, folder: str = "MNIST", n_train: int = 20, n_test: int = 10) -> Path:
    """torchvision 0.29 MNIST reads root/<ClassName>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed,
    and only checks that the four files exist (no md5 for the extracted files)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.repeat((labels * 20)[:, None, None], 28, 1).repeat(28, 2).astype(np.uint8)  # digit k is all 20*k
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_mnist_family(tmp_path, name):
    root = fake_mnist(tmp_path, folder=name)
    ds = load_torchvision(name, root, image_size=16, channels=3)
    cls = getattr(tvd, name)
    assert ds.classes == list(cls.classes)
    assert ds.images.shape == (20, 3, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [i % 10 for i in range(20)]
    assert ds.images[3].unique().tolist() == [60]
    test = load_torchvision(name, root, image_size=28, channels=1, split="test")
    assert test.images.shape == (10, 1, 28, 28)


def test_mnist_class_subset(tmp_path):
    root = fake_mnist(tmp_path)
    ds = load_torchvision("MNIST", root, 8, 1, classes=["7 - seven", "2 - two"])
    assert ds.classes == ["7 - seven", "2 - two"]
    assert ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.images[ds.labels == 0].unique().tolist() == [140]
    with pytest.raises(DataError, match="MNIST.*'7'"):
        load_torchvision("MNIST", root, 8, 1, classes=["7"])


def test_missing_files_message(tmp_path):
    with pytest.raises(DataError) as e:
        load_torchvision("MNIST", tmp_path / "nothing", 8, 1)
    msg = str(e.value)
    assert "missing" in msg and str(tmp_path / "nothing") in msg
    assert "download: true" in msg and "ingest.<domain>.download" in msg


def test_unknown_name(tmp_path):
    with pytest.raises(DataError) as e:
        load_torchvision("MNSIT", tmp_path, 8, 1)
    msg = str(e.value)
    assert "'MNSIT'" in msg and "MNIST" in msg and "CIFAR10" in msg and "FashionMNIST" in msg
    with pytest.raises(DataError):
        load_torchvision("utils", tmp_path, 8, 1)  # an attribute, but not a dataset


def fake_cifar10(root: Path, monkeypatch, per_batch: int = 4) -> Path:
    """CIFAR10 checks the md5 of every batch file, so a fake passes only with the checksums switched off
    (check_integrity(path, None) only checks that the file exists)."""
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", None] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", None]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": None})
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(np.arange(per_batch) % 3)
        chw = np.zeros((per_batch, 3, 32, 32), dtype=np.uint8)
        for k, lab in enumerate(labels):
            chw[k, lab] = 255  # class 0 red, 1 green, 2 blue
        with open(folder / name, "wb") as f:
            pickle.dump({"data": chw.reshape(per_batch, -1), "labels": [int(x) for x in labels]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["red", "green", "blue"]}, f)
    return root


def test_cifar10_bulk_channels_last(tmp_path, monkeypatch):
    root = fake_cifar10(tmp_path, monkeypatch)
    ds = load_torchvision("CIFAR10", root, 8, 3)
    assert ds.classes == ["red", "green", "blue"]
    assert ds.images.shape == (20, 3, 8, 8)
    for k in range(3):
        colour = [255 if c == k else 0 for c in range(3)]
        assert ds.images[ds.labels == k][:, :, 4, 4].unique(dim=0).tolist() == [colour]
    test = load_torchvision("CIFAR10", root, 32, 1, split="test", classes=["blue"])
    assert test.classes == ["blue"] and len(test) == 1 and test.images.unique().tolist() == [29]


class TinyFake(tvd.FakeData):
    """No `.data` array: exercises the item-by-item path (PIL images of odd size, tensor targets)."""

    def __init__(self, root, train: bool = True, download: bool = False):
        super().__init__(size=9 if train else 4, image_size=(3, 10, 14), num_classes=3)
        self.classes = ["x", "y", "z"]


def test_generic_iteration_path(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd, "TinyFake", TinyFake, raising=False)
    ds = load_torchvision("TinyFake", tmp_path, 6, 1)
    assert ds.images.shape == (9, 1, 6, 6) and ds.classes == ["x", "y", "z"]
    ref = TinyFake(tmp_path)
    assert ds.labels.tolist() == [int(ref[i][1]) for i in range(9)]
    sub = load_torchvision("TinyFake", tmp_path, 6, 3, split="test", classes=["z", "x"])
    expected = [{2: 0, 0: 1}[int(TinyFake(tmp_path, train=False)[i][1])] for i in range(4)
                if int(TinyFake(tmp_path, train=False)[i][1]) in (0, 2)]
    assert sub.classes == ["z", "x"] and sub.labels.tolist() == expected
