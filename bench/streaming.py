"""Benchmark of the two storages of a source domain (ingest.storage): a script that prints figures, not a test.

Generates N photo-like JPEGs (smooth colour fields plus noise, so they compress like photos, not like flat
colour) at 224×224 in 10 class folders, then for each storage (memory, shards) runs ingest, prepare and one
pretraining epoch of tiny_cnn on them, each stage in a fresh subprocess, and prints per stage its wall time
and peak resident memory (the stage's process; for pretrain also its largest DataLoader worker), and the
training throughput in images per second. The target domain is a small synthetic set in both runs.

    .venv/bin/python bench/streaming.py --n 2000
    .venv/bin/python bench/streaming.py --n 10000 --modes shards --keep /tmp/bench-streaming
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


def make_jpegs(folder: Path, n: int, size: int) -> float:
    """N JPEGs (quality 90) in CLASSES folders; returns their total size in MB. Class c has a dominant hue."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    total = 0
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        c = i % CLASSES
        hue = np.array([np.cos(c), np.sin(c), np.cos(2 * c)]) * 60 + 128
        field = hue + 50 * np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)),
                                     np.sin(4 * (xx + yy))], axis=-1)
        image = np.clip(field + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"class_{c}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
        total += path.stat().st_size
    return total / 1e6


def params_for(storage: str, size: int) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(image_size=size, labels_per_class=4)
    params["model"] = {"backbone": "tiny_cnn", "backbone_args": {"width": 16}}
    params["train"].update(threads=2, device="cpu")
    params["ingest"].update(storage=storage, source={"kind": "imagefolder", "path": "data/sources/photos"},
                            target={"kind": "synthetic", "per_class": 20,
                                    "classes": ["circle_checker", "square_dots", "triangle_solid"]})
    params["prepare"].update(target_val_per_class=4, target_test_per_class=8)
    params["pretrain"].update(epochs=1)
    return params


def child(stage: str, root: Path) -> None:
    """One stage in this process; prints its figures as JSON on the last line."""
    sys.path.insert(0, str(REPO))
    from graft.config import validate_params
    from graft.paths import Paths
    from graft.stages import ingest, prepare, pretrain

    params = validate_params(yaml.safe_load((root / "params.yaml").read_text()))
    start = time.perf_counter()
    result = {"ingest": ingest, "prepare": prepare, "pretrain": pretrain}[stage].run(params, Paths.at(root))
    out = {"seconds": time.perf_counter() - start,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    if stage == "pretrain":
        import csv

        with open(root / "plots/pretrain.csv", newline="") as f:
            out["images_per_sec"] = float(list(csv.DictReader(f))[-1]["images_per_sec"])
        out["source_test_acc"] = result["source_test_acc"]
    print(json.dumps(out))


def run_mode(storage: str, photos: Path, work: Path, size: int) -> dict:
    root = work / storage
    (root / "data/sources").mkdir(parents=True, exist_ok=True)
    link = root / "data/sources/photos"
    if not link.exists():
        link.symlink_to(photos)
    (root / "params.yaml").write_text(yaml.safe_dump(params_for(storage, size), sort_keys=False))
    figures = {}
    for stage in ("ingest", "prepare", "pretrain"):
        proc = subprocess.run([sys.executable, __file__, "--child", stage, "--root", str(root)], check=False, cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{storage} {stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        figures[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["disk_mb"] = {p: sum(f.stat().st_size for f in (root / p).rglob("*") if f.is_file()) / 1e6
                          for p in ("data/raw", "data/prepared")}
    return figures


def report(storage: str, figures: dict) -> None:
    for stage in ("ingest", "prepare", "pretrain"):
        f = figures[stage]
        extra = f"  worker peak {f['worker_peak_rss_mb']:7.0f} MB" if stage == "pretrain" else ""
        speed = f"  {f['images_per_sec']:6.0f} img/s (test acc {f['source_test_acc']:.2f})" if stage == "pretrain" else ""
        print(f"{storage:7s} {stage:9s} {f['seconds']:7.1f} s  peak RSS {f['peak_rss_mb']:7.0f} MB{extra}{speed}")
    disk = figures["disk_mb"]
    print(f"{storage:7s} on disk: data/raw {disk['data/raw']:.0f} MB, data/prepared {disk['data/prepared']:.1f} MB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="JPEGs to generate (10 classes)")
    ap.add_argument("--size", type=int, default=224, help="image side, of the JPEGs and of data.image_size")
    ap.add_argument("--modes", nargs="+", default=["memory", "shards"], choices=["memory", "shards"])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.root)
    work = args.keep or Path(tempfile.mkdtemp(prefix="graft-bench-streaming-"))
    photos = work / "photos"
    if not photos.exists():
        start = time.perf_counter()
        mb = make_jpegs(photos, args.n, args.size)
        print(f"data: {args.n} JPEGs {args.size}x{args.size} (quality 90, {mb:.0f} MB) in {CLASSES} classes, "
              f"{args.n * 3 * args.size ** 2 / 1e9:.2f} GB decoded; made in {time.perf_counter() - start:.0f} s")
    for storage in args.modes:
        report(storage, run_mode(storage, photos, work, args.size))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
