"""prepare: split data/raw into source train/val/test and target train/val/test under a label budget."""

from __future__ import annotations

import shutil

import torch

from graft.config import Params
from graft.contract import REL, Contract, rel
from graft.data.dataset import DataError, ImageDataset
from graft.data.store import load_dataset, save_dataset
from graft.files import read_json, write_json
from graft.paths import Paths
from graft.console import say
from graft.seeding import generator


CONTRACT = Contract(
    order=20,
    params=("seed", "data.labels_per_class", "prepare"),
    deps=(rel(REL.raw),),
    outs=(rel(REL.prepared("source")), rel(REL.prepared("target"))),
)


def _subset(ds: ImageDataset, idx: list[int]) -> ImageDataset:
    index = torch.tensor(sorted(idx), dtype=torch.int64)
    return ImageDataset(ds.images[index].contiguous(), ds.labels[index].contiguous(), ds.classes)


def _per_class_indices(ds: ImageDataset, seed: int, domain: str) -> list[list[int]]:
    """Each class's indices in a seeded random order (per class, so one class's size never shifts another's split)."""
    out = []
    for c, name in enumerate(ds.classes):
        idx = torch.nonzero(ds.labels == c).flatten()
        order = torch.randperm(len(idx), generator=generator(seed, "prepare", domain, name))
        out.append(idx[order].tolist())
    return out


def split_source(ds: ImageDataset, params: Params) -> dict[str, ImageDataset]:
    p = params.prepare
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for name, idx in zip(ds.classes, _per_class_indices(ds, params.seed, "source")):
        n_val, n_test = max(1, round(len(idx) * p.source_val_fraction)), max(1, round(len(idx) * p.source_test_fraction))
        if len(idx) < n_val + n_test + 1:
            raise DataError(f"source class {name!r} has {len(idx)} images; at least {n_val + n_test + 1} are needed for train/val/test")
        splits["val"] += idx[:n_val]
        splits["test"] += idx[n_val:n_val + n_test]
        splits["train"] += idx[n_val + n_test:]
    return {k: _subset(ds, v) for k, v in splits.items()}


def split_target(ds: ImageDataset, params: Params) -> dict[str, ImageDataset]:
    """Test and validation are drawn first, so the test set does not change with the label budget."""
    p, budget = params.prepare, params.data.labels_per_class
    need = p.target_test_per_class + p.target_val_per_class + budget
    short = {name: len(idx) for name, idx in zip(ds.classes, _per_class_indices(ds, params.seed, "target")) if len(idx) < need}
    if short:
        raise DataError(
            f"target classes with too few images: {short}; each needs data.labels_per_class ({budget}) + "
            f"prepare.target_val_per_class ({p.target_val_per_class}) + prepare.target_test_per_class "
            f"({p.target_test_per_class}) = {need}. Lower those numbers or add images.")
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for idx in _per_class_indices(ds, params.seed, "target"):
        splits["test"] += idx[:p.target_test_per_class]
        splits["val"] += idx[p.target_test_per_class:p.target_test_per_class + p.target_val_per_class]
        splits["train"] += idx[p.target_test_per_class + p.target_val_per_class:need]
    return {k: _subset(ds, v) for k, v in splits.items()}


def channel_stats(ds: ImageDataset) -> tuple[list[float], list[float]]:
    x = ds.images.float().div_(255.0)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()


def run(params: Params, paths: Paths) -> dict:
    summary = {}
    for domain, split in (("source", split_source), ("target", split_target)):
        raw = load_dataset(paths.raw / domain)
        splits = split(raw, params)
        out = paths.prepared(domain)
        tmp = out.with_name(f"{domain}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        sidecars = {name: save_dataset(tmp / name, ds) for name, ds in splits.items()}
        mean, std = channel_stats(splits["train"])
        manifest = {
            "domain": domain,
            "classes": raw.classes,
            "counts": {name: s["count"] for name, s in sidecars.items()},
            "hashes": {name: s["hash"] for name, s in sidecars.items()},
            "label_budget": params.data.labels_per_class if domain == "target" else None,
            "mean": mean,
            "std": std,
            # Unreadable files ingest skipped (ingest.bad_files: skip), so the data's gaps stay visible.
            "skipped_files": read_json(paths.raw / f"{domain}.json").get("skipped", []),
        }
        write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        counts = manifest["counts"]
        say(f"prepare: {domain}: {len(raw.classes)} classes, train {counts['train']}, val {counts['val']}, test {counts['test']}")
        summary.update({f"{domain}_{k}": v for k, v in counts.items()})
    return summary
