"""Crash and resume: a training stage killed with SIGKILL mid-run resumes from its last finished
epoch when the pipeline is rerun, and ends bit-identical to a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_workspace, dvc, make_workspace

pytestmark = pytest.mark.faults


def _longer_pretraining(ws: Path) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["ingest"]["source"]["per_class"] = 80
    params["pretrain"]["epochs"] = 60  # long enough to be killed part-way on any machine
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A workspace with longer pretraining where `dvc repro prepare` ran; the tests work on copies of it."""
    ws = make_workspace(tmp_path_factory.mktemp("resume") / "ws")
    _longer_pretraining(ws)
    ingest_and_prepare(ws)
    return ws


def ingest_and_prepare(ws: Path) -> None:
    """ingest and prepare run in this process and recorded in dvc.lock, as `dvc repro prepare` would leave them
    (without two stage processes' imports): the tests' `dvc repro pretrain` then runs pretrain alone."""
    from graft.cli import main as graft

    assert graft(["-C", str(ws), "stage", "ingest", "prepare"]) == 0
    dvc(ws, "commit", "--force", "ingest", "prepare")


def _dvc_env() -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _checkpoint_epoch(ws: Path) -> int:
    import torch

    for f in (ws / ".graft/checkpoints/pretrain").glob("*.pt"):
        try:
            return int(torch.load(f, weights_only=True)["epoch"])
        except Exception:  # noqa: BLE001 - being replaced right now; look again
            return 0
    return 0


def _kill_dvc_repro_pretrain_after(ws: Path, epochs: int) -> None:
    """Start `dvc repro pretrain` and SIGKILL it (and the stage it runs) once `epochs` are checkpointed."""
    dvc_exe = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.Popen([dvc_exe, "repro", "pretrain"], cwd=ws, env=_dvc_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _checkpoint_epoch(ws) < epochs:
        assert proc.poll() is None, "pretrain finished before it could be interrupted; make it longer"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the `graft stage pretrain` it started
    proc.wait()


@pytest.fixture(scope="module")
def killed(prepared, tmp_path_factory) -> Path:
    """A copy of `prepared` whose `dvc repro pretrain` was killed once 3 epochs were checkpointed; the tests
    resume copies of it."""
    ws = copy_workspace(prepared, tmp_path_factory.mktemp("killed") / "ws")
    _kill_dvc_repro_pretrain_after(ws, 3)
    return ws


def test_killed_pretraining_resumes_and_matches_an_uninterrupted_run(prepared, killed, tmp_path):
    interrupted = copy_workspace(killed, tmp_path / "interrupted")
    killed_at = _checkpoint_epoch(interrupted)
    assert 3 <= killed_at < 60
    assert not (interrupted / "metrics/pretrain.json").exists()

    resumed = dvc(interrupted, "repro", "pretrain").stdout
    assert "pretrain: resuming after epoch" in resumed, resumed
    assert not list((interrupted / ".graft/checkpoints/pretrain").glob("*.pt"))  # finished runs clean up

    straight = straight_pretraining(prepared, tmp_path / "straight")
    assert_same_pretraining(interrupted, straight)
    assert _history_without_timing(interrupted) == _history_without_timing(straight)


def straight_pretraining(prepared: Path, dst: Path) -> Path:
    """A copy of `prepared` where pretraining ran once, never interrupted: in this process (`graft stage
    pretrain`), the reference the resumed runs are compared with. How it was started does not matter to what
    it computes; the interrupted and resumed runs are the ones that go through `dvc repro`."""
    from graft.cli import main as graft

    straight = copy_workspace(prepared, dst)
    assert graft(["-C", str(straight), "stage", "pretrain"]) == 0
    return straight


def assert_same_pretraining(resumed: Path, straight: Path) -> None:
    """The resumed run's metrics and backbone are those of the run never interrupted, to the bit."""
    assert json.loads((resumed / "metrics/pretrain.json").read_text()) == \
           json.loads((straight / "metrics/pretrain.json").read_text())
    assert (resumed / "models/backbone.safetensors").read_bytes() == \
           (straight / "models/backbone.safetensors").read_bytes()


def _history_without_timing(ws: Path) -> list[dict]:
    import csv

    with open(ws / "plots/pretrain.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k not in ("images_per_sec", "seconds")} for row in csv.DictReader(f)]
    assert len(rows) == 60
    return rows


def _dvc_repro_pretrain_until(ws: Path, line: str) -> str:
    """What `dvc repro pretrain` prints up to the first line that contains `line`; then it is killed."""
    dvc_exe = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.Popen([dvc_exe, "repro", "pretrain"], cwd=ws, env=_dvc_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for printed in proc.stdout:
            seen.append(printed)
            if line in printed:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return "".join(seen)


def test_changed_params_start_over_and_say_so(killed, tmp_path):
    ws = copy_workspace(killed, tmp_path / "ws")

    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["pretrain"]["lr"] = params["pretrain"]["lr"] / 2
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Up to the first trained epoch: by then the stage has said whether it resumes, and trains epoch 1 again.
    out = _dvc_repro_pretrain_until(ws, "pretrain: epoch ")
    assert "starting over" in out and "resuming" not in out, out
    assert "pretrain: epoch 1/60" in out, out
