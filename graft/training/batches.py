"""Where the training loop's batches come from: tensors in memory, or a split streamed from shards.

The loop asks for one epoch's batches, (uint8 images N×C×H×W, int64 labels) already augmented, and never
knows which. A streamed split (graft.data.streaming.ShardedSplit) is used through its `batches` method only,
so the training stages that never stream do not depend on its code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch

from graft.data.dataset import ImageDataset
from graft.seeding import generator
from graft.training import distributed
from graft.training.augment import AugmentSpec, make_augment
from graft.training.distributed import World

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainBatches(Protocol):
    images_per_epoch: int   # in this process

    def epoch(self, epoch: int) -> Iterable[Batch]: ...


class MemoryBatches:
    """The epoch's permutation, seeded by (seed, stage, epoch), dealt out by DistributedSampler; augmented in this
    process from torch's global generator, which the loop seeds per epoch."""

    def __init__(self, train: ImageDataset, augment: AugmentSpec | None, seed: int, stage: str, world: World,
                 batch_size: int):
        self.train, self.seed, self.stage, self.world, self.batch_size = train, seed, stage, world, batch_size
        self.augment = make_augment(augment, train.images.shape[-1])
        self.images_per_epoch = math.ceil(len(train) / world.size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        order = torch.randperm(len(self.train), generator=generator(self.seed, self.stage, "shuffle", epoch))
        order = distributed.shard(order, self.world)
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            x = self.train.images[idx]
            if self.augment is not None:
                x = self.augment(x)
            yield x, self.train.labels[idx]


class StreamedBatches:
    """A sharded split: this process's shards, decoded and augmented by DataLoader workers."""

    def __init__(self, train, augment: AugmentSpec | None, seed: int, stage: str, world: World, batch_size: int):
        self.train, self.augment, self.seed, self.stage, self.world = train, augment, seed, stage, world
        self.batch_size = batch_size
        self.images_per_epoch = train.per_rank(world.size)

    def epoch(self, epoch: int) -> Iterable[Batch]:
        return self.train.training_batches(self.seed, self.stage, epoch, self.world.rank, self.world.size,
                                           self.batch_size, self.augment)


def batches_for(train, augment: AugmentSpec | None, *, seed: int, stage: str, world: World,
                batch_size: int) -> TrainBatches:
    if isinstance(train, ImageDataset):
        return MemoryBatches(train, augment, seed, stage, world, batch_size)
    return StreamedBatches(train, augment, seed, stage, world, batch_size)
