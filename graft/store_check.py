"""Does the tracking store still hold what the DVC-tracked records name?

`metrics/register.json` (a DVC output) names the registered model version that the last `register`
made. If the store was deleted or reset since (a removed `mlflow.db`, a new server), DVC still says
"up to date", and graft would print a version that no longer exists. `graft run` asks here first and,
when the version is gone, runs `register` again from the DVC-tracked models.

No MLflow import: this runs on `graft run`'s up-to-date path, which stays fast. The local sqlite store
is read directly (read-only; the `model_versions` table has had the same name and key columns since
MLflow 1.x) and a tracking server through its REST API. Any other store, or one that cannot be read
or reached, is not judged here: None ("cannot tell") is never taken for "lost".
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from graft.files import read_json_or_empty
from graft.paths import Paths


def named_version(root: Path) -> tuple[str, str] | None:
    """(model name, version) that metrics/register.json records, or None if there is none."""
    record = read_json_or_empty(Paths.at(root).metric("register"))
    name, version = record.get("model_name"), record.get("version")
    return (str(name), str(version)) if name and version else None


def lost_record(root: Path, uri: str, timeout: float = 3.0) -> str | None:
    """Why the store at `uri` lacks the version that metrics/register.json names, in words; None if it holds
    it, if nothing is named, or if it cannot be told."""
    named = named_version(root)
    if named is None:
        return None
    name, version = named
    where = f"{name} version {version} (named in metrics/register.json)"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.exists():
            return f"the tracking store {db} does not exist any more, so {where} is gone"
        held = _sqlite_holds(db, name, version)
    elif uri.startswith(("http://", "https://")):
        held = _server_holds(uri, name, version, timeout)
    else:
        return None
    return None if held in (True, None) else f"the tracking store {uri} has no {where}: it was reset or replaced"


def _sqlite_holds(db: Path, name: str, version: str) -> bool | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT 1 FROM model_versions WHERE name = ? AND version = ?",
                               (name, int(version))).fetchone()
    except sqlite3.OperationalError as e:
        return False if "no such table" in str(e) else None  # an empty (new) store has no tables yet
    except (sqlite3.Error, ValueError):
        return None
    return row is not None


def _server_holds(uri: str, name: str, version: str, timeout: float) -> bool | None:
    query = urllib.parse.urlencode({"name": name, "version": version})
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/api/2.0/mlflow/model-versions/get?{query}", timeout=timeout):
            return True
    except urllib.error.HTTPError as e:
        try:
            code = json.loads(e.read() or b"{}").get("error_code")
        except ValueError:
            code = None
        return False if code == "RESOURCE_DOES_NOT_EXIST" else None
    except OSError:
        return None  # unreachable: the command says so where it needs the store
