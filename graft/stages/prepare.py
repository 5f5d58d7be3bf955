"""prepare: split data/raw into source train/val/test and target train/val/test under a label budget."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import torch

from graft.config import Params
from graft.contract import REL, Contract, rel
from graft.data.dataset import DataError, ImageDataset
from graft.data.shards import is_sharded
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


def _carve(per_class: list[list[int]], layout: list[tuple[str, int | None]]) -> dict[str, list[int]]:
    """Cut each class's indices into consecutive splits, in `layout` order; a count of None takes the rest."""
    splits: dict[str, list[int]] = {name: [] for name, _ in layout}
    for idx in per_class:
        start = 0
        for name, count in layout:
            end = len(idx) if count is None else start + count
            splits[name] += idx[start:end]
            start = end
    return splits


def _test_from_files(test: ImageDataset, per_class: int | None, seed: int, domain: str) -> list[int]:
    """The positions in a source's own test files of its test split: `per_class` of each class, seeded, or all of
    them (None)."""
    order = _per_class_indices(test, seed, f"{domain}_test")
    empty = [name for name, idx in zip(test.classes, order) if not idx]
    if empty:
        raise DataError(f"the {domain}'s test files have no image of class {empty}; give test files that hold "
                        f"every class, or leave those out with ingest.{domain}.classes")
    short = {name: len(idx) for name, idx in zip(test.classes, order) if per_class and len(idx) < per_class}
    if short:
        raise DataError(f"the {domain}'s test files have too few images of {short} for prepare.target_test_per_class "
                        f"({per_class}); lower it, or set it to all")
    return [i for idx in order for i in idx[:per_class]]


# A split plan: each split's dataset (the domain's, or its own test files) and its positions in it. Splits are
# copied out of it one at a time, so that a stage holds the raw domain and one split, not all of them at once.
Plan = dict[str, tuple[ImageDataset, list[int]]]


def split_source(ds: ImageDataset, params: Params, test: ImageDataset | None = None) -> dict[str, ImageDataset]:
    """plan_source's splits, copied out all at once."""
    return {name: _subset(d, idx) for name, (d, idx) in plan_source(ds, params, test).items()}


def plan_source(ds: ImageDataset, params: Params, test: ImageDataset | None = None) -> Plan:
    """Fractions of each class for validation and test; a source with its own test files is tested on all of
    them, and only validation is held out of `ds`."""
    plan = {k: (ds, v) for k, v in source_positions(ds, params, test is not None).items()}
    if test is not None:
        plan["test"] = (test, _test_from_files(test, None, params.seed, "source"))
    return plan


def source_positions(ds, params: Params, own_test: bool) -> dict[str, list[int]]:
    """The positions of `ds` (anything with .labels and .classes: a sharded source has no images here) in each
    split; without its own test files, no test split is carved out of `ds`."""
    p = params.prepare
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for name, idx in zip(ds.classes, _per_class_indices(ds, params.seed, "source")):
        n_val = max(1, round(len(idx) * p.source_val_fraction))
        n_test = 0 if own_test else max(1, round(len(idx) * p.source_test_fraction))
        if len(idx) < n_val + n_test + 1:
            raise DataError(f"source class {name!r} has {len(idx)} images; at least {n_val + n_test + 1} are needed for train/val/test")
        for split, chosen in _carve([idx], [("val", n_val), ("test", n_test), ("train", None)]).items():
            splits[split] += chosen
    return splits


def split_target(ds: ImageDataset, params: Params, test: ImageDataset | None = None) -> dict[str, ImageDataset]:
    """plan_target's splits, copied out all at once."""
    return {name: _subset(d, idx) for name, (d, idx) in plan_target(ds, params, test).items()}


def plan_target(ds: ImageDataset, params: Params, test: ImageDataset | None = None) -> Plan:
    """Validation and the label budget come from `ds`. Test comes from the source's own test files when it has
    them; else from `ds`, drawn first so that it does not move with the label budget, or, when it is `all`,
    what is left after validation and the budget."""
    p, budget = params.prepare, params.data.labels_per_class
    test_size = None if p.target_test_per_class == "all" else p.target_test_per_class
    if test is not None:
        layout, test_need = [("val", p.target_val_per_class), ("train", budget)], 0
    elif test_size is None:
        layout, test_need = [("val", p.target_val_per_class), ("train", budget), ("test", None)], 1
    else:
        layout, test_need = [("test", test_size), ("val", p.target_val_per_class), ("train", budget)], test_size
    order = _per_class_indices(ds, params.seed, "target")
    need = budget + p.target_val_per_class + test_need
    short = {name: len(idx) for name, idx in zip(ds.classes, order) if len(idx) < need}
    if short:
        test_term = (f" + prepare.target_test_per_class ({p.target_test_per_class}"
                     f"{': at least one image left' if test_size is None else ''})" if test_need else "")
        raise DataError(
            f"target classes with too few images: {short}; each needs data.labels_per_class ({budget}) + "
            f"prepare.target_val_per_class ({p.target_val_per_class}){test_term} = {need}. "
            f"Lower those numbers or add images.")
    plan = {k: (ds, v) for k, v in _carve(order, layout).items()}
    if test is not None:
        plan["test"] = (test, _test_from_files(test, test_size, params.seed, "target"))
    return plan


_STATS_CHUNK = 128  # images turned into floats at once by channel_stats


def channel_stats(ds: ImageDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (n-1) of the images scaled to 0..1: the float32 values that
    `x = images.float() / 255; x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))` gives, without the float copy of the
    whole split (four times its size).

    The mean is summed in torch's own order for that reduction: each image's channel plane is summed on its own,
    and those sums are added up in float32 one image after the other; summing chunk by chunk in that order gives
    the same bits. A grey or 1×1 image has no such planes (torch then sums the tensor as one run), so those are
    reduced whole. The std comes from a histogram of the 256 values, accumulated in float64 as torch does.
    """
    images = ds.images
    n, c, h, w = images.shape
    if c == 1 or h * w == 1:
        x = images.float().div_(255.0)
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    total = torch.zeros(c, dtype=torch.float32)
    counts = torch.zeros(c, 256, dtype=torch.int64)
    for start in range(0, n, _STATS_CHUNK):
        chunk = images[start:start + _STATS_CHUNK]
        for plane_sums in chunk.float().div_(255.0).sum(dim=(2, 3)):
            total += plane_sums
        for channel in range(c):
            counts[channel] += torch.bincount(chunk[:, channel].reshape(-1), minlength=256)
    mean = total.div_(n * h * w)
    values = torch.arange(256, dtype=torch.uint8).float().div_(255.0).double()  # exactly the float32 values
    count = counts.sum(dim=1).double()
    mean64 = (counts * values).sum(dim=1) / count
    var = (counts * (values - mean64[:, None]).square()).sum(dim=1) / (count - 1)
    return mean.tolist(), var.sqrt().float().clamp_min(1e-3).tolist()


def run(params: Params, paths: Paths) -> dict:
    summary = {}
    for domain, plan_splits in (("source", plan_source), ("target", plan_target)):
        if domain == "source" and is_sharded(read_json(paths.raw / "source.json")):
            summary.update(_prepare_sharded_source(params, paths))  # index lists only, no image copied
            continue
        raw = load_dataset(paths.raw / domain)
        own_test = paths.raw_test(domain).with_suffix(".safetensors").exists()
        plan = plan_splits(raw, params, load_dataset(paths.raw_test(domain)) if own_test else None)
        out = paths.prepared(domain)
        tmp = out.with_name(f"{domain}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        sidecars = {}
        for name, (ds, idx) in plan.items():
            split = _subset(ds, idx)
            sidecars[name] = save_dataset(tmp / name, split)
            if name == "train":
                mean, std = channel_stats(split)
            del split  # before the next split is copied out
        manifest = {
            "domain": domain,
            "classes": raw.classes,
            "counts": {name: s["count"] for name, s in sidecars.items()},
            "hashes": {name: s["hash"] for name, s in sidecars.items()},
            "label_budget": params.data.labels_per_class if domain == "target" else None,
            "test_from": "test_files" if own_test else "split",  # the source's own test split, or carved out here
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


def _prepare_sharded_source(params: Params, paths: Paths) -> dict:
    """A sharded source's splits as lists of positions into data/raw/source/'s shards, chosen as for one in
    memory (source_positions); the channel statistics stream through the training images once."""
    from graft.data import streaming

    raw_file = paths.raw / "source.json"
    raw = read_json(raw_file)
    if paths.raw_test("source").with_suffix(".safetensors").exists():
        raise DataError("a source with its own test files cannot be stored as shards yet; set ingest.storage: memory")
    labels = SimpleNamespace(labels=torch.tensor(raw["labels"], dtype=torch.int64), classes=raw["classes"])
    out = paths.prepared("source")
    tmp = out.with_name("source.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sidecars = streaming.write_splits(tmp, source_positions(labels, params, False), raw["hash"])
    manifest = {"domain": "source", "storage": "shards", "raw_index": raw_file.relative_to(paths.root).as_posix(),
                "classes": raw["classes"], "counts": {k: s["count"] for k, s in sidecars.items()},
                "hashes": {k: s["hash"] for k, s in sidecars.items()}, "label_budget": None, "test_from": "split"}
    train = streaming.open_split(paths.root, manifest, tmp, "train", raw)
    manifest["mean"], manifest["std"] = streamed_channel_stats(train)
    manifest["skipped_files"] = raw.get("skipped", [])
    write_json(tmp / "manifest.json", manifest)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    counts = manifest["counts"]
    say(f"prepare: source: {len(raw['classes'])} classes, train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']} (index lists into {len(raw['shards'])} shards)")
    return {f"source_{k}": v for k, v in counts.items()}


def streamed_channel_stats(split) -> tuple[list[float], list[float]]:
    """channel_stats of a streamed split, accumulated in float64 batch by batch (std with n-1, as torch's)."""
    total = sq = None
    n = 0
    for x, _ in split.ordered_batches(256):
        x = x.double().div_(255.0)
        s, q = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    var = (sq - n * mean.square()) / max(1, n - 1)
    return mean.tolist(), var.clamp_min(0).sqrt().clamp_min(1e-3).tolist()
