"""Shared fixtures: tiny params, a prepared tiny workspace, temporary repository copies, one Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Offline and quiet, before any of the tools is imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("GRAFT_PIPELINE_RUN_ID", None)


def tiny_overrides() -> dict:
    """Sizes that make the whole pipeline run in seconds on a CPU."""
    return {
        "data": {"image_size": 16, "labels_per_class": 4},
        "model": {"backbone": "tiny_cnn", "backbone_args": {"width": 8}},
        "train": {"batch_size": 32, "threads": 1},
        "ingest": {"source": {"kind": "synthetic", "per_class": 24,
                              "classes": ["circle_solid", "square_checker", "cross_dots", "ring_stripes"]},
                   "target": {"kind": "synthetic", "per_class": 16,
                              "classes": ["circle_checker", "square_dots", "triangle_solid"]}},
        "prepare": {"target_val_per_class": 4, "target_test_per_class": 8},
        "pretrain": {"epochs": 2},
        "finetune": {"epochs": 2},
    }


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_params_dict() -> dict:
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    return merge(shipped, tiny_overrides())


@pytest.fixture
def tiny_params():
    from graft.config import validate_params

    return validate_params(tiny_params_dict())


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=cwd,
                   check=True, capture_output=True)


def make_workspace(ws: Path) -> Path:
    """A fresh copy of this repository (its git files, no outputs) with tiny params, committed to a new git repo."""
    for rel in _tracked_files():
        if rel.startswith(("tests/", "dvc.lock")):
            continue
        dst = ws / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    (ws / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    _git(ws, "init", "-q")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "workspace")
    return ws


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory) -> Path:
    """A folder where ingest and prepare already ran on tiny params (shared by the stage tests)."""
    from graft.config import validate_params
    from graft.paths import Paths
    from graft.stages import ingest, prepare

    root = tmp_path_factory.mktemp("prepared")
    params = validate_params(tiny_params_dict())
    ingest.run(params, Paths.at(root))
    prepare.run(params, Paths.at(root))
    return root


@pytest.fixture
def stage_root(prepared_root: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared folder, so a test's outputs never leak into another's."""
    root = tmp_path / "root"
    shutil.copytree(prepared_root, root)
    return root


@pytest.fixture
def grafted(stage_root: Path, tiny_params):
    """Paths of a stage_root where pretrain and replace_head have run (a grafted model to fine-tune)."""
    from graft.paths import Paths
    from graft.stages import pretrain, replace_head

    paths = Paths.at(stage_root)
    pretrain.run(tiny_params, paths)
    replace_head.run(tiny_params, paths)
    return paths


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API server for the whole test run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_cli(ws: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`graft ARGS` in a subprocess, from the venv this test runs in."""
    cmd = [sys.executable, "-m", "graft.cli", "-C", str(ws), *args]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(exe), *args], cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
