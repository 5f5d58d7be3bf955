"""Datasets on disk: one safetensors file of tensors plus a JSON sidecar, read back in one go."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from graft.data.dataset import DataError, ImageDataset
from graft.files import read_json, write_json
from graft.paths import Paths


def content_hash(ds: ImageDataset) -> str:
    h = hashlib.sha256()
    # The tensors' own buffers: .tobytes() would copy the whole dataset just to hash it.
    h.update(ds.images.contiguous().numpy())
    h.update(ds.labels.contiguous().numpy())
    h.update("\0".join(ds.classes).encode())
    return h.hexdigest()[:16]


def save_dataset(path: Path, ds: ImageDataset, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `<path>.safetensors` and `<path>.json`; returns the sidecar."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors (0.8) writes straight from the tensors' memory: no serialised copy of the dataset is built.
    save_file({"images": ds.images.contiguous(), "labels": ds.labels.contiguous()}, str(path.with_suffix(".safetensors")))
    sidecar = {
        "classes": ds.classes,
        "count": len(ds),
        "per_class": {c: int((ds.labels == i).sum()) for i, c in enumerate(ds.classes)},
        "shape": list(ds.images.shape[1:]),
        "hash": content_hash(ds),
        **(meta or {}),
    }
    write_json(path.with_suffix(".json"), sidecar)
    return sidecar


def load_dataset(path: Path) -> ImageDataset:
    from safetensors.torch import load_file

    tensors_file, sidecar_file = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for f in (tensors_file, sidecar_file):
        if not f.exists():
            raise DataError(f"{f}: missing; run the stage that writes it (graft run, or dvc repro)")
    tensors = load_file(str(tensors_file))  # memory-mapped: pages are read as they are touched, never copied
    return ImageDataset(tensors["images"], tensors["labels"], read_json(sidecar_file)["classes"])


def load_domain(paths: Paths, domain: str) -> tuple[dict[str, ImageDataset], dict]:
    """A prepared domain's train, val and test splits, and its manifest."""
    folder = paths.prepared(domain)
    manifest_file = folder / "manifest.json"
    if not manifest_file.exists():
        raise FileNotFoundError(f"{manifest_file}: missing; run `graft run` (or `graft stage prepare`) first")
    manifest = read_json(manifest_file)
    if manifest.get("storage") == "shards":
        raise DataError(f"{folder.relative_to(paths.root)} is stored as shards, which only pretrain streams so far: "
                        f"{domain} storage: shards is not supported yet; set ingest.storage: memory and rerun ingest")
    return {name: load_dataset(folder / name) for name in ("train", "val", "test")}, manifest
