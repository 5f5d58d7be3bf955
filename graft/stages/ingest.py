"""ingest: read the configured sources and write them to data/raw/ as graft will read them."""

from __future__ import annotations

import shutil
from pathlib import Path

from graft.config import Params
from graft.contract import REL, Contract, rel
from graft.data import shards
from graft.data.dataset import DataError
from graft.data.shard_ingest import stream_source
from graft.data.sources import describe_source, load_source, load_source_test, source_fingerprints
from graft.data.store import save_dataset
from graft.paths import Paths
from graft.console import say


CONTRACT = Contract(
    order=10,
    params=("seed", "data.image_size", "data.channels", "ingest"),
    deps=(rel(REL.sources),),  # users' own images: new files there make the pipeline stale
    outs=(rel(REL.raw),),
)


def run(params: Params, paths: Paths) -> dict:
    # Load both domains before writing anything: a bad file in the target must not leave a
    # fresh source beside a stale target.
    # Folders outside data/sources/ are invisible to DVC: remember what they held (taken before
    # reading, so files that arrive meanwhile count as new) for the retraining check.
    fingerprints = source_fingerprints(params, paths.root)
    loaded, tests = {}, {}  # tests: the test split a source ships apart (idx test_images), else None
    for domain in ("source", "target"):
        spec = getattr(params.ingest, domain)
        say(f"ingest: reading the {domain} domain from {describe_source(spec)}")
        loaded[domain] = _read(spec, domain, params, paths)
        classes = loaded[domain][0].classes
        if len(classes) < 2:
            raise DataError(f"the {domain} domain has {len(classes)} class ({', '.join(classes) or 'none'}): a classifier "
                            f"needs at least two; add class folders or list more classes in ingest.{domain}.classes")
        tests[domain] = load_source_test(spec, params, paths.root, classes)

    tmp = paths.raw.with_name("raw.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    for domain, (ds, skipped) in loaded.items():
        spec = getattr(params.ingest, domain)
        extra = {"origin": spec.model_dump(mode="json"), "skipped": [repo_relative(s, paths.root) for s in skipped]}
        if domain in fingerprints:
            extra["source_fingerprint"] = fingerprints[domain]
        meta = _save(tmp, domain, ds, extra, params)
        test = tests[domain]
        if test is not None:
            summary[f"{domain}_test_images"] = len(test)
            save_dataset(tmp / paths.raw_test(domain).name, test, {"origin": extra["origin"], "split": "test"})
        say(f"ingest: {domain}: {len(ds)} images, {len(ds.classes)} classes"
            + (f", and {len(test)} test images from its test files" if test is not None else "")
            + (f", {len(skipped)} unreadable files skipped" if skipped else ""))
        summary.update({f"{domain}_images": len(ds), f"{domain}_classes": len(ds.classes),
                        f"{domain}_skipped": len(skipped), f"{domain}_hash": meta["hash"]})
    shutil.rmtree(paths.raw, ignore_errors=True)
    tmp.rename(paths.raw)
    return summary


def _read(spec, domain: str, params: Params, paths: Paths):
    """The domain's dataset; a large image-folder source is streamed to shards in a staging folder instead (bounded
    memory: ingest.storage), which only becomes data/raw/source/ with the rest, once both domains are read."""
    if domain == "source":
        streamed = stream_source(spec, params, paths.raw.with_name("raw.shards.tmp"), paths.root)
        if streamed is not None:
            return streamed
    return load_source(spec, domain, params, paths.root)


def _save(tmp: Path, domain: str, ds, extra: dict, params: Params) -> dict:
    """Write one domain under `tmp` as ingest.storage says (the source only: a target always stays in memory)."""
    ingest, data = params.ingest, params.data
    if isinstance(ds, shards.ShardedDataset):
        meta = ds.move_to(tmp / domain, extra)
    elif domain == "source" and shards.use_shards(ingest.storage, len(ds), data.channels, data.image_size):
        meta = shards.save_shards(tmp / domain, ds, extra, ingest.shard_samples, seed=params.seed)
    else:
        if domain == "target" and ingest.storage != "memory" and shards.use_shards(
                "auto", len(ds), data.channels, data.image_size):
            say("ingest: target: kept in memory although large: sharded target storage is not supported yet")
        return save_dataset(tmp / domain, ds, extra)
    say(f"ingest: {domain}: {len(meta['shards'])} WebDataset shards in data/raw/{domain}/ (ingest.storage)")
    return meta


def repo_relative(skipped: dict, root: Path) -> dict:
    """A skipped file's record with its path relative to the repository root (POSIX), when the file is inside it.

    data/raw/ is tracked by DVC, so its files must not depend on where the clone lives; a file outside the
    repository keeps its absolute path (DVC cannot track it anyway, and no other name would find it)."""
    path = Path(skipped["path"])
    if not path.is_absolute():
        return skipped
    root = Path(root)
    rel = None
    for candidate, base in ((path, root), (path.resolve(), root.resolve())):
        if candidate.is_relative_to(base):
            rel = candidate.relative_to(base).as_posix()
            break
    if rel is None:
        return skipped
    # The decoder's reason may quote the path too (an exception's message).
    reason = str(skipped.get("reason", "")).replace(str(path), rel)
    return {**skipped, "path": rel, "reason": reason}
