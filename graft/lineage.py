"""Where a run came from: git commit and dirty flag, data hash, params hash, pipeline run id."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from graft.dag import locked_hash


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(root: Path, pipeline_id: str, flow_run_id: str | None = None) -> dict[str, str]:
    root = Path(root)
    params_file = root / "params.yaml"
    tags = {
        "graft.git_commit": _git(root, "rev-parse", "HEAD") or "unknown",
        # dvc.lock and outputs change as the pipeline runs; only source changes make a run "dirty".
        "graft.git_dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                         ":(exclude)dvc.lock", ":(exclude)params.yaml"))).lower(),
        "graft.data_hash": locked_hash(root, "ingest", "data/raw") or "not yet recorded",
        "graft.params_hash": hashlib.sha256(params_file.read_bytes()).hexdigest()[:12] if params_file.exists() else "none",
        "graft.pipeline_run_id": pipeline_id,
    }
    if flow_run_id:
        tags["graft.prefect_flow_run_id"] = flow_run_id
    return tags


def _dvc_ancestor() -> str | None:
    """A stable id for the `dvc repro` process this stage runs under (Linux /proc), or None."""
    pid = os.getppid()
    for _ in range(6):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if any(part.endswith(b"dvc") or part.endswith(b"dvc/__main__.py") for part in cmdline[:3]):
            start_time = stat.rsplit(")", 1)[1].split()[19]
            return f"dvc-{pid}-{start_time}"
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            return None
    return None


def pipeline_run_id() -> str:
    """The id that groups stage runs: set by `graft run`, or derived from the `dvc repro` process."""
    import uuid

    return os.environ.get("GRAFT_PIPELINE_RUN_ID") or _dvc_ancestor() or uuid.uuid4().hex
