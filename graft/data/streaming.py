"""Reading a split of a sharded domain (graft.data.shards) in batches, through DataLoader worker processes.

What an epoch streams is a pure function of (seed, stage, epoch, rank), worked out from the index alone:

1. the shards are shuffled (seeded by seed, stage, epoch) and dealt out round-robin: process r of a torchrun
   group of n reads shards r, r+n, r+2n, ... of that order and no others;
2. the positions of this split in those shards, in shard order, pass through a seeded shuffle buffer of
   SHUFFLE_BUFFER samples (WebDataset's own default size), the memory a shuffle of a stream may take;
3. every process keeps the same number of them, so that all take the same number of steps (DDP needs it):
   the sum of the k smallest shards' counts, k = shards // processes. That bound holds whatever the epoch's
   deal, so the steps per epoch (and the learning-rate schedule) never change; what is cut is the tail of each
   process's order, which differs every epoch. A single process keeps everything.

Batches are cut from that order and dealt to the DataLoader's workers in turn (batch b to worker b mod W), which
is the order DataLoader hands them back in; each worker reads the process's shards, keeps the bytes of its
own batches' samples only, and decodes and augments those. Each image's augmentation is seeded by (seed, stage,
epoch, position). So the batches, to the bit, are the same with 0, 2 or 8 workers, and epoch k's are the same
whether or not epochs 1..k-1 ran in this process: a resumed run streams what an uninterrupted one does. The
price: every worker reads (not decodes) all of its process's tar bytes, W times the I/O of splitting shards
among workers; decoding is not repeated.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from graft.data.dataset import DataError
from graft.data.shards import decode_image, is_sharded, shard_files
from graft.files import read_json, write_json
from graft.seeding import derive_seed, generator

SHUFFLE_BUFFER = 1000
SPLITS = ("train", "val", "test")


def default_workers() -> int:
    """Decoding processes per training process; results never depend on it (see above)."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class EpochSpec:
    """What one pass over a split streams; pure data, so it pickles into the DataLoader's workers."""

    seed: int
    stage: str
    epoch: int
    rank: int = 0
    world_size: int = 1
    batch_size: int = 64
    shuffle: bool = True
    augment: object = None          # graft.training.augment.AugmentSpec, or None


@dataclass(frozen=True)
class ShardedSplit:
    """One split (train, val or test) of a sharded domain: positions into the raw shards, read on demand."""

    shards: tuple[tuple[str, int, int], ...]   # (file, first position, count), in position order
    positions: tuple[int, ...]                 # ascending
    labels: torch.Tensor                       # the label of every raw position (int64)
    classes: list[str]
    shape: tuple[int, int, int]                # C, H, W
    workers: int = field(default_factory=default_workers)

    def __len__(self) -> int:
        return len(self.positions)

    def split_labels(self) -> torch.Tensor:
        return self.labels[torch.tensor(self.positions, dtype=torch.int64)]

    def per_shard(self) -> list[list[int]]:
        """This split's positions in each shard, ascending."""
        out, i = [], 0
        for _, start, count in self.shards:
            j = i
            while j < len(self.positions) and self.positions[j] < start + count:
                j += 1
            out.append(list(self.positions[i:j]))
            i = j
        return out

    def per_rank(self, world_size: int) -> int:
        """Samples each of `world_size` processes streams per epoch (see the module's docstring, 3)."""
        counts = sorted(len(p) for p in self.per_shard())
        if world_size == 1:
            return len(self.positions)
        if len(counts) < world_size:
            raise DataError(f"{len(counts)} shards for {world_size} processes: each process reads shards of its own; "
                            f"lower ingest.shard_samples and re-run ingest for at least {world_size} shards")
        return sum(counts[:len(counts) // world_size])

    def batches(self, spec: EpochSpec) -> DataLoader:
        """The epoch's batches (uint8 N×C×H×W, int64 labels), decoded and augmented by worker processes."""
        stream = ShardStream(self, spec)
        workers = min(self.workers, len(stream.batch_plan))
        return DataLoader(stream, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None)

    def training_batches(self, seed: int, stage: str, epoch: int, rank: int, world_size: int, batch_size: int,
                         augment=None) -> DataLoader:
        return self.batches(EpochSpec(seed, stage, epoch, rank, world_size, batch_size, True, augment))

    def ordered_batches(self, batch_size: int) -> DataLoader:
        """All of the split in position order, no augmentation: for validation and test."""
        return self.batches(EpochSpec(0, "evaluate", 0, batch_size=batch_size, shuffle=False))


def epoch_order(split: ShardedSplit, spec: EpochSpec) -> tuple[list[int], list[int]]:
    """(the shards this process reads, in reading order; its positions in training order)."""
    per_shard = split.per_shard()
    if not spec.shuffle:  # shards holding none of the split are not even opened
        return [s for s, pos in enumerate(per_shard) if pos], list(split.positions)
    shuffled = torch.randperm(len(per_shard), generator=generator(spec.seed, spec.stage, "shards", spec.epoch))
    mine = shuffled.tolist()[spec.rank::spec.world_size]
    rng = random.Random(derive_seed(spec.seed, spec.stage, "buffer", spec.epoch, spec.rank))
    order = list(_buffer_shuffle((p for s in mine for p in per_shard[s]), SHUFFLE_BUFFER, rng))
    return mine, order[:split.per_rank(spec.world_size)]


def _buffer_shuffle(stream, size: int, rng: random.Random) -> Iterator[int]:
    """WebDataset's shuffle: fill a buffer, then emit a random element for each new one."""
    buf: list[int] = []
    for item in stream:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(len(buf))
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


class ShardStream(IterableDataset):
    """One epoch of one process; in each DataLoader worker, the batches that worker owns (batch b: worker b mod W)."""

    def __init__(self, split: ShardedSplit, spec: EpochSpec):
        self.split, self.spec = split, spec
        self.shard_order, order = epoch_order(split, spec)
        self.batch_plan = [order[i:i + spec.batch_size] for i in range(0, len(order), spec.batch_size)]
        self.augment = _augmenter(spec, split.shape[-1])  # built here once, inherited by every worker

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.batch_plan[worker::workers]
        if not mine:
            return
        missing = [len(b) for b in mine]
        owner = {p: k for k, b in enumerate(mine) for p in b}
        pending: dict[int, tuple[str, bytes]] = {}
        augment = self.augment
        done = 0
        for position, sample in self._samples():
            k = owner.get(position)
            if k is None:
                continue
            pending[position] = sample
            missing[k] -= 1
            while done < len(mine) and missing[done] == 0:
                yield self._batch(mine[done], pending, augment)
                done += 1
            if done == len(mine):
                return
        raise DataError(f"{Path(self.split.shards[0][0]).parent}: the shards lack {sum(missing)} samples that their "
                        "index lists; re-run ingest")

    def _samples(self) -> Iterator[tuple[int, tuple[str, bytes]]]:
        """(position, (kind, bytes)) of this process's shards, in reading order: WebDataset's tar reader. kind: raw,
        or png in shards an earlier graft wrote."""
        from webdataset.tariterators import tarfile_samples

        urls = [{"url": self.split.shards[s][0]} for s in self.shard_order]
        for sample in tarfile_samples(urls):
            kind = "raw" if "raw" in sample else "png"
            yield int(sample["__key__"]), (kind, sample[kind])

    def _batch(self, positions: list[int], pending: dict[int, tuple[str, bytes]],
               augment) -> tuple[torch.Tensor, torch.Tensor]:
        images = []
        for p in positions:
            image = decode_image(*pending.pop(p), self.split.shape)
            images.append(augment(image, p) if augment is not None else image)
        return torch.stack(images), self.split.labels[torch.tensor(positions, dtype=torch.int64)]


def _augmenter(spec: EpochSpec, image_size: int) -> _Augment | None:
    from graft.training.augment import per_image_augment

    per_image = per_image_augment(spec.augment, image_size) if spec.shuffle else None
    return _Augment(per_image, spec) if per_image is not None else None


@dataclass(frozen=True)
class _Augment:
    """Per-image augmentation seeded by (seed, stage, epoch, position), on a forked RNG: draws never depend on
    which worker (or the training process itself, with 0 workers) runs it, nor disturb that process's RNG.
    A class, not a closure, so that it pickles where workers are spawned rather than forked."""

    per_image: object
    spec: EpochSpec

    def __call__(self, image: torch.Tensor, position: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.spec.seed, self.spec.stage, "augment", self.spec.epoch, position))
            return self.per_image(image)


# ---------------------------------------------------------------- prepared splits on disk

def write_splits(folder: Path, positions: dict[str, list[int]], raw_hash: str) -> dict[str, dict]:
    """Each split as `<split>.json`: the positions it takes from the raw shards, its count and a hash (of the raw
    data's hash and the positions, so the prepared output changes whenever the raw images do)."""
    out = {}
    for name, pos in positions.items():
        pos = sorted(pos)
        digest = hashlib.sha256(f"{raw_hash}:{','.join(map(str, pos))}".encode()).hexdigest()[:16]
        out[name] = {"storage": "shards", "count": len(pos), "hash": digest, "positions": pos}
        write_json(folder / f"{name}.json", out[name])
    return out


def open_split(root: Path, manifest: dict, folder: Path, name: str, raw_index: dict | None = None) -> ShardedSplit:
    raw_index = raw_index or read_json(root / manifest["raw_index"])
    raw_folder = (root / manifest["raw_index"]).parent
    files = tuple((str(f), start, count) for f, start, count in shard_files(raw_index, raw_folder))
    return ShardedSplit(files, tuple(read_json(folder / f"{name}.json")["positions"]),
                        torch.tensor(raw_index["labels"], dtype=torch.int64), raw_index["classes"],
                        tuple(raw_index["shape"]))


def open_domain(paths, domain: str) -> tuple[dict, dict]:
    """A prepared domain's splits, in memory (graft.data.store) or streamed from shards, and its manifest."""
    from graft.data.store import load_domain

    folder = paths.prepared(domain)
    manifest_file = folder / "manifest.json"
    manifest = read_json(manifest_file) if manifest_file.exists() else {}
    if not is_sharded(manifest):
        return load_domain(paths, domain)
    raw_index = read_json(paths.root / manifest["raw_index"])
    return {name: open_split(paths.root, manifest, folder, name, raw_index) for name in SPLITS}, manifest
