"""Small file helpers: atomic writes, JSON, YAML, content hashes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via temp file + fsync + rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_yaml(path: Path) -> Any:
    """A YAML file through libyaml's C parser where PyYAML has it, else the pure-Python one; the same values
    either way (the resolver and constructor are the same Python code). dvc.lock lists every code file of
    every stage (about 45 kB): the pure-Python parser took 0.16 s per read, the C one 0.02 s, and graft reads
    it in every stage process."""
    import yaml

    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_json_or_empty(path: Path) -> dict:
    """A metrics/manifest file that may not exist yet (or is unreadable): {} instead of an error."""
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return {}


def _ignored(path: Path) -> bool:
    """Bytecode caches are not inputs (and .dvcignore hides them from DVC too)."""
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def hash_paths(paths: list[Path]) -> str:
    """sha256 over the names and contents of the files (directories walked in sorted order)."""
    h = hashlib.sha256()
    for top in paths:
        top = Path(top)
        files = sorted(p for p in top.rglob("*") if p.is_file() and not _ignored(p)) if top.is_dir() else [top]
        for f in files:
            if not f.exists():
                h.update(f"missing:{f}".encode())
                continue
            h.update(str(f.relative_to(top.parent) if top.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    """The sha256 of one file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_history(path: Path, history: list[dict]) -> None:
    """A stage's per-epoch rows as CSV (the DVC plot), floats to six places."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(history[0]) if history else ["epoch"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    tmp.replace(path)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write_metrics(path: Path, metrics: dict) -> None:
    """A stage's metrics JSON (a DVC metric), floats to six places so reruns diff cleanly."""
    write_json(path, _rounded(metrics))
