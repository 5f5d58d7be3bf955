"""ingest's side of sharded storage: a folder of image files streamed into shards (graft.data.shards), one
file at a time, so that memory stays bounded whatever the folder's size."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from graft.data.dataset import DataError
from graft.data.shards import ShardedDataset, ShardSink, use_shards, write_order

_CHUNK = 256                        # files decoded per batch of threads: bounds the results waiting to be written
_MAX_THREADS = 8


def _decode(job: tuple[Path, int, int]) -> tuple[torch.Tensor | None, str]:
    """Runs in a thread (PIL releases the GIL while it decodes and resizes): the image, or why it failed."""
    from graft.data.imagefolder import _reason
    from graft.data.images import _decode

    path, image_size, channels = job
    try:
        return _decode(path, image_size, channels), ""
    except DataError as err:
        return None, _reason(path, err)


def _decoded(jobs: list[tuple[Path, int]], image_size: int, channels: int) -> Iterator[tuple]:
    """(path, label, image or None, the reason it failed), in file order, _CHUNK files at a time."""
    from graft.data.images import bomb_warnings_as_errors

    threads = min(_MAX_THREADS, os.cpu_count() or 1)
    with bomb_warnings_as_errors(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="graft-shard") as pool:
        for start in range(0, len(jobs), _CHUNK):
            chunk = jobs[start:start + _CHUNK]
            results = pool.map(_decode, [(path, image_size, channels) for path, _ in chunk])
            for (path, label), (image, reason) in zip(chunk, results):
                yield path, label, image, reason


def write_imagefolder(root: Path, folder: Path, image_size: int, channels: int, classes: list[str] | None,
                      bad_files: str, shard_samples: int,
                      scanned: tuple[list[str], list[tuple[Path, int]]] | None = None,
                      seed: int | None = None) -> tuple[dict, list[dict]]:
    """Stream root/<class>/<files> into shards, one file at a time; returns (index, skipped files). Unreadable
    files are handled as graft.data.imagefolder.load_imagefolder handles them (bad_files: fail or skip), and listed
    in file order. With `seed`, files go into the shards in a seeded random order (graft.data.shards.write_order)."""
    from graft.data.imagefolder import scan_imagefolder

    names, jobs = scanned or scan_imagefolder(root, classes)
    order = write_order(len(jobs), seed)
    sink = ShardSink(folder, names, image_size, channels, shard_samples)
    bad: list[tuple[int, dict]] = []
    for i, (path, label, image, reason) in zip(order, _decoded([jobs[i] for i in order], image_size, channels)):
        if image is None:
            bad.append((i, {"path": str(path), "reason": reason}))
        else:
            sink.add(image, label)
    index = sink.close()
    bad = [b for _, b in sorted(bad, key=lambda item: item[0])]
    _check_bad_files(root, bad, len(jobs), bad_files, index)
    return index, bad


def _check_bad_files(root: Path, bad: list[dict], total: int, bad_files: str, index: dict) -> None:
    if bad and bad_files == "fail":
        lines = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad)
        raise DataError(
            f"{root}: {len(bad)} of {total} image files cannot be read:\n{lines}\n"
            "Fix or remove these files, or set `ingest.bad_files: skip` to leave them out (they are then recorded).")
    emptied = [c for c, n in index["per_class"].items() if n == 0]
    if emptied:
        raise DataError(f"{root}: no readable images left in class folders {emptied} after skipping unreadable "
                        "files; add readable images or leave these classes out")


def stream_source(spec, params, staging: Path, root: Path) -> tuple[ShardedDataset, list[dict]] | None:
    """An image-folder source that `ingest.storage` puts in shards, streamed file by file into `staging`
    (bounded memory); None for every other source (loaded whole, then written as ingest.storage says)."""
    from graft.config import ImageFolderSource
    from graft.data.imagefolder import scan_imagefolder
    from graft.data.sources import _resolve

    if not isinstance(spec, ImageFolderSource):
        return None
    size, channels, ingest = params.data.image_size, params.data.channels, params.ingest
    folder = _resolve(root, spec.path)
    scanned = scan_imagefolder(folder, spec.classes)
    if not use_shards(ingest.storage, len(scanned[1]), channels, size):
        return None
    shutil.rmtree(staging, ignore_errors=True)
    index, skipped = write_imagefolder(folder, staging / "source", size, channels, spec.classes, ingest.bad_files,
                                       ingest.shard_samples, scanned, seed=params.seed)
    return ShardedDataset(staging / "source", index), skipped
