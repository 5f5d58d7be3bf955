"""Datasets too large for memory, written as WebDataset shards: plain POSIX tar files.

Layout, beside the in-memory form's `<domain>.safetensors` + `<domain>.json`:

    data/raw/<domain>/shard-000000.tar   <position>.raw (the image as graft decoded and resized it: its uint8
                                         bytes, channels × height × width) and <position>.cls (its label),
                                         `tar tf` shows them
    data/raw/<domain>.json               the index: classes, count, per_class, shape, hash, labels (one per
                                         position, in order), shards [{name, count}], storage: shards

Why WebDataset: the shards are ordinary tar files, so DVC tracks and hashes them like any file and `tar` inspects
them; there is no server or index service to run (LitData and MosaicML Streaming each keep their own binary
format and index); its ShardWriter streams samples out one by one, so memory stays bounded.

Why raw bytes: a streamed image is then bit for bit the uint8 tensor the in-memory path holds, and reading it
costs nothing. Shards first held PNG (lossless too, a third smaller on generated photos), but decoding a 224-px
PNG took 1.06 ms of CPU, which on a 2-core machine the DataLoader workers took from the training steps: one
epoch of 10,000 photos streamed at 223 img/s against 377 in memory (BENCHMARKS.md). JPEG would be smaller
still, but every epoch would then train on other pixels than the in-memory path. Shards an earlier graft
wrote as PNG are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from graft.data.dataset import DataError, ImageDataset
from graft.files import write_json

# Above this many decoded bytes (count × channels × size²) `storage: auto` shards. The in-memory path peaks at
# about twice the dataset (prepare: the raw tensor and one split at a time; 20,000 photos, 3.0 GB decoded, peaked
# at 5.8 GB, BENCHMARKS.md), so 1 GiB keeps it near 2-3 GiB, which an 8 GB laptop or CI runner has; below it
# memory is a little faster (no worker processes, nothing to read per epoch).
MEMORY_LIMIT_BYTES = 1 << 30
SHARD_MAX_BYTES = 256 * 2**20      # shards of a few hundred MB stream well and stay cheap to re-hash
SHARD_NAME = "shard-%06d.tar"
FORMAT = "webdataset/raw-uint8-chw"


def decoded_bytes(count: int, channels: int, image_size: int) -> int:
    return count * channels * image_size * image_size


def use_shards(storage: str, count: int, channels: int, image_size: int) -> bool:
    """What `ingest.storage` means for a dataset of `count` images."""
    if storage == "auto":
        return decoded_bytes(count, channels, image_size) > MEMORY_LIMIT_BYTES
    return storage == "shards"


def encode_image(image: torch.Tensor) -> bytes:
    """A shard's sample: the image's uint8 bytes, channels × height × width (the index holds the shape)."""
    return image.contiguous().numpy().tobytes()


def decode_image(kind: str, data: bytes, shape: tuple[int, int, int]) -> torch.Tensor:
    """A shard sample back to a uint8 C×H×W tensor: `kind` is its extension in the tar (raw, or png from an
    earlier graft)."""
    if kind == "raw":
        if len(data) != shape[0] * shape[1] * shape[2]:
            raise DataError(f"a shard image has {len(data)} bytes, the index says {tuple(shape)}; re-run ingest")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(*shape)
    return decode_png(data, shape[0])


def decode_png(data: bytes, channels: int) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        arr = np.array(image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] != channels:
        raise DataError(f"a shard image has {arr.shape[2]} channels, the index says {channels}; re-run ingest")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class ShardSink:
    """Writes samples to `folder`/shard-*.tar as they come; `close` returns the index (written by the caller,
    last). Holds one shard's tar stream and the labels (8 bytes an image), never the images."""

    def __init__(self, folder: Path, classes: list[str], image_size: int, channels: int, shard_samples: int):
        import webdataset as wds

        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.classes, self.shape = folder, classes, [channels, image_size, image_size]
        # mtime 0: the same images give the same bytes, so DVC sees an unchanged dataset after a rerun.
        self._writer = wds.ShardWriter(str(folder / SHARD_NAME), maxcount=shard_samples, maxsize=SHARD_MAX_BYTES,
                                       verbose=0, mtime=0.0, encoder=False)
        self._hash = hashlib.sha256()   # the same digest graft.data.store.content_hash gives the in-memory form
        self.labels: list[int] = []
        self._counts: list[int] = []    # samples per shard, in shard order

    def add(self, image: torch.Tensor, label: int) -> None:
        if list(image.shape) != self.shape or image.dtype != torch.uint8:
            raise DataError(f"image of {image.dtype} {tuple(image.shape)} for shards of uint8 {tuple(self.shape)}")
        position = len(self.labels)
        self._writer.write({"__key__": f"{position:09d}", "raw": encode_image(image),
                            "cls": str(label).encode()})
        shard = self._writer.shard - 1  # ShardWriter numbers the next shard once it opens one
        self._counts += [0] * (shard + 1 - len(self._counts))
        self._counts[shard] += 1
        self._hash.update(image.contiguous().numpy().tobytes())
        self.labels.append(int(label))

    def close(self) -> dict:
        self._writer.close()
        self._hash.update(torch.tensor(self.labels, dtype=torch.int64).numpy().tobytes())
        self._hash.update("\0".join(self.classes).encode())
        names = [SHARD_NAME % i for i in range(len(self._counts))]
        missing = [n for n in names if not (self.folder / n).is_file()]
        if missing:
            raise DataError(f"{self.folder}: shards {missing} were not written; check the disk and re-run ingest")
        return {"storage": "shards", "format": FORMAT, "classes": self.classes, "count": len(self.labels),
                "per_class": {c: self.labels.count(i) for i, c in enumerate(self.classes)}, "shape": self.shape,
                "hash": self._hash.hexdigest()[:16],
                "shards": [{"name": f"{self.folder.name}/{n}", "count": c} for n, c in zip(names, self._counts)],
                "labels": self.labels}


def write_dataset(folder: Path, ds: ImageDataset, shard_samples: int, seed: int | None = None) -> dict:
    """An in-memory dataset (a source kind that loads whole: synthetic, idx, torchvision) as shards; in a
    seeded random order when `seed` is given (see write_order)."""
    sink = ShardSink(folder, ds.classes, ds.images.shape[-1], ds.images.shape[1], shard_samples)
    for i in write_order(len(ds), seed):
        sink.add(ds.images[i], int(ds.labels[i]))
    return sink.close()


def write_order(n: int, seed: int | None) -> list[int]:
    """The order samples go into shards: seeded random, because sources list images class by class and an epoch
    only shuffles shards and a bounded buffer: shards of one class each would train on long runs of one class
    (on 10,000 class-sorted photos, one epoch reached 17% test accuracy against 97% in memory). None: as given."""
    if seed is None:
        return list(range(n))
    from graft.seeding import generator

    return torch.randperm(n, generator=generator(seed, "ingest", "shard_order")).tolist()


def write_index(path: Path, index: dict) -> None:
    write_json(path, index)  # graft.files writes atomically: a reader never sees half an index


def is_sharded(sidecar: dict) -> bool:
    return sidecar.get("storage") == "shards"


def shard_files(index: dict, raw_folder: Path) -> list[tuple[Path, int, int]]:
    """(file, first position, count) of each shard, in position order."""
    out, start = [], 0
    for shard in index["shards"]:
        out.append((raw_folder / shard["name"], start, int(shard["count"])))
        start += int(shard["count"])
    return out



@dataclass
class ShardedDataset:
    """A domain ingest streamed to shards, in a staging folder until ingest moves it into data/raw/."""

    folder: Path
    index: dict

    @property
    def classes(self) -> list[str]:
        return self.index["classes"]

    def __len__(self) -> int:
        return int(self.index["count"])

    def move_to(self, folder: Path, meta: dict) -> dict:
        """Put the shards at `folder` and write their index beside it as `<folder>.json`, last."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = self.folder.parent
        self.folder.rename(folder)
        self.folder = folder
        with contextlib.suppress(OSError):
            staging.rmdir()  # the staging folder, once empty
        index = {**self.index, **meta}
        write_index(folder.with_suffix(".json"), index)
        return index


def save_shards(folder: Path, ds: ImageDataset, meta: dict, shard_samples: int, seed: int | None = None) -> dict:
    """A dataset already in memory (synthetic, idx, torchvision, ...) written as shards at `folder`, with its index
    beside it as `<folder>.json`."""
    index = {**write_dataset(folder, ds, shard_samples, seed), **meta}
    write_index(folder.with_suffix(".json"), index)
    return index
