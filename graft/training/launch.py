"""Starting a training stage under torchrun, from `graft run` or `graft stage` (train.launcher: torchrun).

The launching process keeps what it always does: the workspace lock, the stage's MLflow run, and
recording the stage. What it runs is a process group of its own:

    python -m torch.distributed.run --nnodes N --nproc-per-node P ... -m graft.cli -C ROOT stage NAME

Each of those processes finds GRAFT_STAGE_RUN_ID in its environment and runs only the stage's work
(`graft.runner.run_stage_worker`): process 0 logs into that MLflow run and writes the stage's summary
to GRAFT_STAGE_SUMMARY for the launcher; the others write nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from graft.config import Params
from graft.errors import GraftError
from graft.files import read_json

TRAINING_STAGES = ("pretrain", "finetune", "baseline")
RUN_ID_VAR = "GRAFT_STAGE_RUN_ID"
SUMMARY_VAR = "GRAFT_STAGE_SUMMARY"
RDZV_VAR = "GRAFT_RDZV_ENDPOINT"


class LaunchError(GraftError, RuntimeError):
    """The torchrun process group of a stage failed."""


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def launches_processes(name: str, params: Params) -> bool:
    """Whether stage `name` runs under a torchrun this process starts (not when it is already under one)."""
    if name not in TRAINING_STAGES or params.train.launcher != "torchrun" or under_torchrun():
        return False
    return not (name == "pretrain" and params.pretrain.weights != "train")  # importing weights trains nothing


def torchrun_command(name: str, params: Params, root: Path) -> list[str]:
    train = params.train
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(train.nnodes),
           "--nproc-per-node", str(train.nproc_per_node)]
    if train.nnodes == 1:
        cmd.append("--standalone")  # a private rendezvous on a free local port
    else:
        endpoint = os.environ.get(RDZV_VAR)
        if not endpoint:
            raise LaunchError(f"train.nnodes is {train.nnodes}: set {RDZV_VAR}=host:port (the first machine) on "
                              f"every machine, and start the same command on each")
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", os.environ.get("GRAFT_RDZV_ID", f"graft-{name}")]
    return cmd + ["-m", "graft.cli", "-C", str(root), "stage", name]


def run_under_torchrun(name: str, params: Params, root: Path, stage_run_id: str | None) -> dict:
    """Run stage `name` as a torchrun process group and wait; returns process 0's summary."""
    summary_file = root / ".graft" / "launch" / f"{name}.json"
    summary_file.parent.mkdir(parents=True, exist_ok=True)
    summary_file.unlink(missing_ok=True)
    env = {**os.environ, RUN_ID_VAR: stage_run_id or "", SUMMARY_VAR: str(summary_file),
           # The launched processes import the graft beside this one, as `graft stage` does.
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    # A session of its own, so that an interrupt or a failure here stops every process of the group.
    proc = subprocess.Popen(torchrun_command(name, params, root), cwd=root, env=env, start_new_session=True)
    try:
        code = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    if code != 0 or not summary_file.exists():
        raise LaunchError(f"{name}: torchrun exited with code {code}; the processes' own messages are above")
    summary = read_json(summary_file)
    summary_file.unlink()
    return summary
