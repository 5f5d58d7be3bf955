"""Where a run came from: git commit and dirty flag, data hash, params hash, pipeline run id (as graft's
tags, and the commit again as MLflow's source tags)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from graft.dvc import locked_hash


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
        # dvc.lock, params.yaml (logged with the run) and DVC's .gitignore entries change as the
        # pipeline runs; only other changes to tracked files make a run "dirty".
        "graft.git_dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                         ":(exclude)dvc.lock", ":(exclude)params.yaml",
                                         ":(exclude,glob)**/.gitignore"))).lower(),
        "graft.data_hash": locked_hash(root, "ingest", "data/raw") or "not yet recorded",
        "graft.params_hash": hashlib.sha256(params_file.read_bytes()).hexdigest()[:12] if params_file.exists() else "none",
        "graft.pipeline_run_id": pipeline_id,
    }
    if flow_run_id:
        tags["graft.prefect_flow_run_id"] = flow_run_id
    return {**tags, **source_tags(root, tags["graft.git_commit"], tags["graft.git_dirty"])}


def public_url(remote: str) -> str:
    """A git remote's URL without the user name and password an https remote may carry (never logged)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(remote)
    if parts.scheme and parts.hostname:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return remote  # scp-like (git@host:org/repo.git) or a local path: nothing secret in it


def source_tags(root: Path, commit: str, dirty: str) -> dict[str, str]:
    """MLflow's own source tags, which its UI shows as the run's Source: the repository (its `origin`
    remote, else its folder), the commit and the branch. Only the type and name when there is no commit."""
    remote = _git(root, "remote", "get-url", "origin")
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": public_url(remote) if remote else str(root.resolve())}
    if commit == "unknown":
        return tags
    tags.update({"mlflow.source.git.commit": commit, "mlflow.source.git.dirty": dirty})
    if branch := _git(root, "symbolic-ref", "--short", "-q", "HEAD"):  # none on a detached HEAD
        tags["mlflow.source.git.branch"] = branch
    if remote:
        tags["mlflow.source.git.repoURL"] = public_url(remote)
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


def describe_version(root: Path, uri: str) -> dict:
    """A registered model version with everything behind it: commit, data, params and runs."""
    from graft import tracking

    version = tracking.resolve_version(root, uri)
    register_run = tracking.get_run(root, version["run_id"])
    parent_id = register_run["tags"].get("mlflow.parentRunId")
    parent = tracking.get_run(root, parent_id) if parent_id else None
    stages = tracking.child_runs(root, parent_id) if parent_id else [register_run]
    tags = {**(parent["tags"] if parent else {}), **version["tags"]}
    return {"version": version, "parent": parent, "stages": stages,
            "commit": tags.get("graft.git_commit", "unknown"), "dirty": tags.get("graft.git_dirty", "unknown"),
            "data_hash": tags.get("graft.data_hash", "unknown"), "params_hash": tags.get("graft.params_hash", "unknown"),
            "pipeline_run_id": tags.get("graft.pipeline_run_id", "unknown"),
            "params": parent["params"] if parent else {}}


def format_lineage(info: dict) -> str:
    v = info["version"]
    gate = {k.removeprefix("graft.gate."): val for k, val in v["tags"].items() if k.startswith("graft.gate.")}
    lines = [
        f"{v['name']} version {v['version']}  aliases: {', '.join(v['aliases']) or 'none'}",
        f"  git commit    {info['commit']}{'  (uncommitted changes at the time)' if info['dirty'] == 'true' else ''}",
        f"  data (raw)    {info['data_hash']}",
        f"  params.yaml   {info['params_hash']}",
        f"  pipeline run  {info['pipeline_run_id']}" + (f"  (MLflow run {info['parent']['run_id']})" if info["parent"] else ""),
        f"  promotion     {gate.get('reason', 'n/a')}",
        "  stage runs:",
    ]
    for run in info["stages"]:
        lines.append(f"    {run['tags'].get('graft.stage', run['name']):<13} {run['run_id']}  {run['status'].lower()}")
    if info["params"]:
        lines.append("  params:")
        lines += [f"    {k} = {val}" for k, val in sorted(info["params"].items())]
    return "\n".join(lines)
