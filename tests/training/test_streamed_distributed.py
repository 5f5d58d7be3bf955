"""Streamed training under torchrun: two CPU processes (gloo) fit on a split stored as WebDataset shards; each
reads only its own shards, the two never see the same image in an epoch, and both take the same steps."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from graft.data import shards, streaming
from graft.data.dataset import ImageDataset
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.loop import fit
from graft.training.recipe import Recipe

pytestmark = pytest.mark.slow  # torchrun process groups

EPOCHS, BATCH = 2, 8


def _split(folder: Path) -> streaming.ShardedSplit:
    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(torch.randint(0, 256, (44, 3, 16, 16), dtype=torch.uint8, generator=g),
                      torch.arange(44) % 3, ["a", "b", "c"])
    index = _index(folder, ds)  # written once, by the test before it starts the processes
    files = tuple((str(f), s, c) for f, s, c in shards.shard_files(index, folder))
    return streaming.ShardedSplit(files, tuple(range(44)), torch.tensor(index["labels"]), index["classes"],
                                  tuple(index["shape"]), workers=0)


def _index(folder: Path, ds: ImageDataset) -> dict:
    from graft.files import read_json

    if not (folder / "source.json").exists():
        shards.save_shards(folder / "source", ds, {}, shard_samples=5)  # 9 shards: 8 of 5 and one of 4
    return read_json(folder / "source.json")


class Recording:
    """The split, noting every training image this process is given (a digest of each), epoch by epoch."""

    def __init__(self, split):
        self.split, self.seen = split, {}

    def __len__(self):
        return len(self.split)

    def per_rank(self, world_size):
        return self.split.per_rank(world_size)

    def ordered_batches(self, batch_size):
        return self.split.ordered_batches(batch_size)

    def training_batches(self, seed, stage, epoch, rank, world_size, batch_size, augment=None):
        rows = self.seen.setdefault(epoch, [])
        for x, y in self.split.training_batches(seed, stage, epoch, rank, world_size, batch_size, augment):
            rows += [_digest(img) for img in x]
            yield x, y


def _digest(image: torch.Tensor) -> str:
    return image.flatten()[:64].numpy().tobytes().hex()


def _worker(rank: int, port: int, folder: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    from graft.training.distributed import join

    torch.set_num_threads(1)
    join(torch.device("cpu"))
    train = Recording(_split(folder))
    torch.manual_seed(0)
    model = GraftClassifier(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8), 3)
    fit(model, train, train.split, Recipe(epochs=EPOCHS, lr=3e-3, batch_size=BATCH), seed=0, stage="t",
        device=torch.device("cpu"))
    (folder / f"rank{rank}.json").write_text(json.dumps(train.seen))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_read_disjoint_shards_and_take_equal_steps(tmp_path):
    split = _split(tmp_path)
    mp.start_processes(_worker, args=(_free_port(), tmp_path), nprocs=2, start_method="spawn")
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    per_rank = split.per_rank(2)
    assert per_rank == 4 + 5 * 3
    for epoch in range(1, EPOCHS + 1):
        mine = [seen[r][str(epoch)] for r in (0, 1)]
        assert len(mine[0]) == len(mine[1]) == per_rank  # the same steps in both processes
        assert not set(mine[0]) & set(mine[1])
        for r in (0, 1):  # and only from the shards dealt to this process this epoch
            spec = streaming.EpochSpec(0, "t", epoch, r, 2, BATCH // 2)
            own = streaming.ShardStream(split, spec).shard_order
            allowed = {_digest(x) for s in own for x in _shard_images(split, s)}
            assert set(mine[r]) <= allowed


def _shard_images(split: streaming.ShardedSplit, shard: int) -> torch.Tensor:
    _, start, count = split.shards[shard]
    one = streaming.ShardedSplit(split.shards, tuple(range(start, start + count)), split.labels, split.classes,
                                 split.shape, workers=0)
    return torch.cat([x for x, _ in one.ordered_batches(64)])
