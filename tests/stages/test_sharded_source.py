"""ingest, prepare and pretrain on a source stored as WebDataset shards (ingest.storage: shards): a folder of
JPEGs streamed into shards, splits written as index lists, pretraining streamed through DataLoader workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from graft.config import validate_params
from graft.data import streaming
from graft.data.dataset import DataError
from graft.data.store import load_dataset, load_domain
from graft.files import read_json
from graft.paths import Paths
from graft.stages import ingest, prepare, pretrain
from tests.conftest import merge, tiny_params_dict

pytestmark = pytest.mark.slow  # trains for seconds

CLASSES = ("apple", "bear", "cloud")


def jpeg_folder(root: Path, per_class: int = 20) -> Path:
    """Class folders of small JPEGs of a class-specific colour plus noise (learnable, not trivial)."""
    g = torch.Generator().manual_seed(3)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = torch.zeros(3, 1, 1)
            base[c] = 160
            arr = (base + torch.randint(0, 96, (3, 24, 24), generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(arr.permute(1, 2, 0).numpy()).save(root / name / f"{i:03d}.jpg", quality=92)
    return root


def sharded_params(storage: str = "shards", **extra) -> object:
    raw = merge(tiny_params_dict(), {"ingest": {"storage": storage, "shard_samples": 8}})
    raw["ingest"]["source"] = {"kind": "imagefolder", "path": "data/sources/photos"}
    return validate_params(merge(raw, extra))


@pytest.fixture
def sharded_root(tmp_path) -> Path:
    root = tmp_path / "root"
    jpeg_folder(root / "data/sources/photos")
    params = sharded_params()
    ingest.run(params, Paths.at(root))
    prepare.run(params, Paths.at(root))
    return root


def test_ingest_and_prepare_write_shards_and_index_lists(sharded_root):
    raw = read_json(sharded_root / "data/raw/source.json")
    assert raw["storage"] == "shards" and raw["count"] == 60 and raw["classes"] == list(CLASSES)
    assert [s["count"] for s in raw["shards"]] == [8] * 7 + [4]
    assert min(p.name for p in (sharded_root / "data/raw/source").iterdir()) == "shard-000000.tar"
    assert not (sharded_root / "data/raw/source.safetensors").exists()
    assert (sharded_root / "data/raw/target.safetensors").exists()  # the target stays in memory

    prepared = sharded_root / "data/prepared/source"
    assert sorted(p.name for p in prepared.iterdir()) == ["manifest.json", "test.json", "train.json", "val.json"]
    assert sum(p.stat().st_size for p in prepared.iterdir()) < 8_000  # positions, no image bytes
    manifest = read_json(prepared / "manifest.json")
    assert manifest["storage"] == "shards" and manifest["raw_index"] == "data/raw/source.json"
    assert manifest["counts"] == {"train": 48, "val": 6, "test": 6}
    assert len(manifest["mean"]) == 3 and all(s > 0 for s in manifest["std"])
    splits = [set(read_json(prepared / f"{s}.json")["positions"]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert set.union(*splits) == set(range(60))


def test_same_images_and_kind_of_split_as_in_memory(sharded_root, tmp_path):
    """The shards hold the images the in-memory path decodes (in a seeded random order), split the same way:
    the same number of each class in each split."""
    memory = tmp_path / "memory"
    shutil.copytree(sharded_root / "data/sources", memory / "data/sources")
    params = sharded_params("memory")
    ingest.run(params, Paths.at(memory))
    prepare.run(params, Paths.at(memory))
    raw = load_dataset(memory / "data/raw/source")
    index = read_json(sharded_root / "data/raw/source.json")
    assert index["labels"] != raw.labels.tolist() and sorted(index["labels"]) == sorted(raw.labels.tolist())
    manifest = read_json(sharded_root / "data/prepared/source/manifest.json")
    split = streaming.open_split(sharded_root, manifest, sharded_root / "data/prepared/source", "train")
    streamed = torch.cat([x for x, _ in split.ordered_batches(16)])
    in_memory = load_dataset(memory / "data/prepared/source/train")
    assert {bytes(x.numpy().tobytes()) for x in streamed} <= {bytes(x.numpy().tobytes()) for x in raw.images}
    assert torch.equal(split.split_labels().bincount(), in_memory.labels.bincount())
    assert read_json(memory / "data/prepared/source/manifest.json")["counts"] == manifest["counts"]


def test_pretrain_streams_the_sharded_source(sharded_root):
    params = sharded_params(pretrain={"epochs": 2, "augment": {"flip": True, "crop_padding": 2}})
    metrics = pretrain.run(params, Paths.at(sharded_root))
    assert metrics["epochs"] == 2 and metrics["source_test_acc"] > 0.5  # three colours: easy to learn
    assert (sharded_root / "models/backbone.safetensors").exists()
    assert read_json(sharded_root / "models/backbone.json")["source_classes"] == list(CLASSES)
    assert len((sharded_root / "plots/pretrain.csv").read_text().splitlines()) == 3


def test_a_sharded_target_is_refused_clearly(sharded_root):
    """Only pretrain streams: a stage that loads a domain whole says so instead of failing on a missing file."""
    paths = Paths.at(sharded_root)
    shutil.rmtree(paths.prepared("target"))
    shutil.copytree(paths.prepared("source"), paths.prepared("target"))
    with pytest.raises(DataError, match="target storage: shards is not supported yet; set ingest.storage: memory"):
        load_domain(paths, "target")
