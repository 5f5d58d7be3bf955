"""Sharded datasets (graft.data.shards) and streaming them (graft.data.streaming): the round trip, the index,
shard sizes, bounded-memory ingest of a JPEG folder, and what an epoch streams: the same order and augmentation
with 0 or 2 workers, the same epoch k whether or not earlier epochs ran, disjoint shards per torchrun rank."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from graft.data import shard_ingest, shards, streaming
from graft.data.dataset import DataError, ImageDataset
from graft.data.imagefolder import load_imagefolder
from graft.data.store import content_hash
from graft.training.augment import AugmentSpec


def _dataset(n: int = 30, classes: int = 3, size: int = 8) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageDataset(images, torch.arange(n) % classes, [f"c{i}" for i in range(classes)])


def _split(tmp_path: Path, ds: ImageDataset, shard_samples: int, positions=None, workers=0) -> streaming.ShardedSplit:
    index = shards.save_shards(tmp_path / "raw" / "source", ds, {}, shard_samples)
    files = tuple((str(f), s, c) for f, s, c in shards.shard_files(index, tmp_path / "raw"))
    pos = tuple(range(len(ds))) if positions is None else tuple(positions)
    return streaming.ShardedSplit(files, pos, torch.tensor(index["labels"]), index["classes"],
                                  tuple(index["shape"]), workers=workers)


def _epoch(split, epoch=1, rank=0, world=1, batch=4, augment=None, workers=None):
    if workers is not None:
        split = streaming.ShardedSplit(split.shards, split.positions, split.labels, split.classes, split.shape,
                                       workers=workers)
    spec = streaming.EpochSpec(7, "pretrain", epoch, rank, world, batch, True, augment)
    return list(split.batches(spec))


def test_round_trip_keeps_every_pixel_and_the_index(tmp_path):
    ds = _dataset()
    index = shards.save_shards(tmp_path / "source", ds, {"origin": "test"}, shard_samples=8)
    assert index["count"] == 30 and index["classes"] == ["c0", "c1", "c2"] and index["shape"] == [3, 8, 8]
    assert [s["count"] for s in index["shards"]] == [8, 8, 8, 6]
    assert index["labels"] == ds.labels.tolist() and index["per_class"] == {"c0": 10, "c1": 10, "c2": 10}
    assert index["hash"] == content_hash(ds)  # the same digest as the in-memory form's
    assert (tmp_path / "source.json").exists() and index["origin"] == "test"
    with tarfile.open(tmp_path / "source" / "shard-000000.tar") as tar:  # a plain tar, image bytes + label
        assert tar.getnames()[:2] == ["000000000.cls", "000000000.raw"]
        assert tar.extractfile("000000000.raw").read() == ds.images[0].numpy().tobytes()
    split = _split(tmp_path / "again", ds, 8)
    x, y = zip(*split.ordered_batches(7))
    assert torch.equal(torch.cat(x), ds.images) and torch.equal(torch.cat(y), ds.labels)


def test_shards_an_earlier_graft_wrote_as_png_stream_the_same_pixels(tmp_path):
    ds = _dataset()
    split = _split(tmp_path, ds, 8)
    for name, _, _ in split.shards:  # rewrite each sample as the PNG member earlier shards held
        with tarfile.open(name) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(name, "w") as tar:
            for member, data in members:
                if member.name.endswith(".raw"):
                    image = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(3, 8, 8)
                    data = png_bytes(image)
                    member.name = member.name.replace(".raw", ".png")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    x, y = zip(*split.ordered_batches(7))
    assert torch.equal(torch.cat(x), ds.images) and torch.equal(torch.cat(y), ds.labels)


def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.numpy().transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_raw_sample_of_the_wrong_size_is_refused():
    with pytest.raises(DataError, match="re-run ingest"):
        shards.decode_image("raw", bytes(10), (3, 8, 8))


def test_rewritten_shards_are_byte_identical(tmp_path):
    shards.save_shards(tmp_path / "a", _dataset(), {}, 8)
    shards.save_shards(tmp_path / "b", _dataset(), {}, 8)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()  # DVC sees no change after a rerun


def test_shards_are_cut_by_count(tmp_path):
    index = shards.save_shards(tmp_path / "s", _dataset(n=10), {}, shard_samples=3)
    assert [s["count"] for s in index["shards"]] == [3, 3, 3, 1]
    assert next(s["name"] for s in index["shards"]) == "s/shard-000000.tar"


def _jpeg_folder(root: Path, per_class: int = 6, bad: bool = False) -> Path:
    g = torch.Generator().manual_seed(1)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8, generator=g).numpy()
            Image.fromarray(arr).save(root / c / f"{i:03d}.jpg", quality=90)
    if bad:
        (root / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_imagefolder_streams_into_the_images_the_memory_path_decodes(tmp_path):
    root = _jpeg_folder(tmp_path / "jpegs")
    index, skipped = shard_ingest.write_imagefolder(root, tmp_path / "out" / "source", 16, 3, None, "fail", 5)
    memory, _ = load_imagefolder(root, 16, 3)
    assert skipped == [] and index["hash"] == content_hash(memory) and index["classes"] == ["cat", "dog"]
    assert [s["count"] for s in index["shards"]] == [5, 5, 2]


def test_imagefolder_bad_files_fail_or_are_skipped(tmp_path):
    root = _jpeg_folder(tmp_path / "jpegs", bad=True)
    with pytest.raises(DataError, match="1 of 13 image files cannot be read"):
        shard_ingest.write_imagefolder(root, tmp_path / "a" / "source", 16, 3, None, "fail", 5)
    index, skipped = shard_ingest.write_imagefolder(root, tmp_path / "b" / "source", 16, 3, None, "skip", 5)
    assert index["count"] == 12 and [Path(s["path"]).name for s in skipped] == ["broken.jpg"]


def test_auto_shards_above_a_gibibyte():
    assert not shards.use_shards("auto", 20_000, 3, 32)
    assert shards.use_shards("auto", 20_000, 3, 224)          # the 3.0 GB folder
    assert shards.use_shards("shards", 10, 3, 8) and not shards.use_shards("memory", 10**9, 3, 224)


def test_an_epoch_is_the_same_with_zero_or_two_workers(tmp_path):
    split = _split(tmp_path, _dataset(n=42), 6)
    spec = AugmentSpec(crop_padding=2, flip=True, trivial_augment=True)
    a, b = _epoch(split, augment=spec, workers=0), _epoch(split, augment=spec, workers=2)
    assert len(a) == len(b) == 11 and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    plain = _epoch(split, workers=0)
    assert any(not torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, plain))  # augmentation did something
    assert sorted(torch.cat([y for _, y in plain]).tolist()) == sorted(split.split_labels().tolist())


def test_the_order_changes_by_epoch_but_not_by_what_ran_before(tmp_path):
    split = _split(tmp_path, _dataset(n=40), 6)
    first, second = _epoch(split, epoch=1), _epoch(split, epoch=2)
    torch.manual_seed(123)  # whatever the process did meanwhile
    second_again = _epoch(split, epoch=2)
    order = lambda batches: torch.cat([y for _, y in batches]).tolist()
    keys = lambda batches: torch.cat([x.flatten(1)[:, :8] for x, _ in batches])
    assert not torch.equal(keys(first), keys(second)) and torch.equal(keys(second), keys(second_again))
    assert order(second) == order(second_again)


def test_two_ranks_read_disjoint_shards_and_take_equal_steps(tmp_path):
    ds = _dataset(n=50)
    split = _split(tmp_path, ds, 6)  # 9 shards: 8 of 6 images and one of 2
    per_rank = split.per_rank(2)
    assert per_rank == 2 + 6 + 6 + 6  # the 4 smallest shards: what the rank with 4 of the 9 reads, at worst
    for epoch in (1, 2):
        spec = [streaming.EpochSpec(7, "pretrain", epoch, r, 2, 4) for r in (0, 1)]
        read = [set(streaming.ShardStream(split, s).shard_order) for s in spec]
        assert not read[0] & read[1] and read[0] | read[1] == set(range(9))
        got = [torch.cat([x.flatten(1) for x, _ in _epoch(split, epoch, r, 2, workers=0)]) for r in (0, 1)]
        assert len(got[0]) == len(got[1]) == per_rank
        rows = lambda t: {tuple(r.tolist()) for r in t}
        assert not rows(got[0]) & rows(got[1])


def test_a_split_streams_its_own_positions_only(tmp_path):
    ds = _dataset(n=30)
    split = _split(tmp_path, ds, 8, positions=range(0, 30, 3))
    x = torch.cat([b for b, _ in _epoch(split, batch=3)])
    assert len(x) == 10
    wanted = {tuple(ds.images[i].flatten().tolist()) for i in range(0, 30, 3)}
    assert {tuple(r.flatten().tolist()) for r in x} == wanted


def test_more_processes_than_shards_is_a_clear_error(tmp_path):
    split = _split(tmp_path, _dataset(n=10), 8)
    with pytest.raises(DataError, match="2 shards for 4 processes.*ingest.shard_samples"):
        split.per_rank(4)
