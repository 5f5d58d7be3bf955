"""No orphaned runs: MLflow runs left RUNNING by a graft process that was killed are ended as KILLED,
tagged with what happened, by the next graft command; live processes' runs are never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from graft import tracking
from tests.conftest import REPO, graft_in_process, session_server_env

pytestmark = pytest.mark.faults

# A graft process that opens a pipeline run and a stage run, then dies without ending them.
KILLED_MIDWAY = ("import os, sys\n"
                 "from pathlib import Path\n"
                 "from graft import tracking\n"
                 "root = Path(sys.argv[1])\n"
                 "parent = tracking.start_pipeline_run(root, 'graft', 'p-killed', {'seed': 0}, {})\n"
                 "stage = tracking.stage_run(root, 'graft', 'pretrain', parent, {}, {})\n"
                 "stage.__enter__()\n"
                 "print(os.getpid(), flush=True)\n"
                 "os._exit(0)\n")

HOLDER = ("import sys, time\n"
          "from graft.workspace_lock import hold\n"
          "with hold(sys.argv[1], 'graft run'):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(120)\n")


def _killed_midway(root: Path) -> str:
    """The pid of a process that left a pipeline run and a stage run RUNNING in `root`'s store."""
    out = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, str(root)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return out.split()[-1]


def _runs(root: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri(root))
    return client.search_runs([client.get_experiment_by_name("graft").experiment_id])


def _assert_killed_by(runs: list, pid: str) -> None:
    assert {r.info.run_name for r in runs} >= {"pretrain"}
    for run in runs:
        assert run.info.status == "KILLED", run.info
        assert run.data.tags[tracking.ENDED_BY_TAG] == f"graft: the process that ran it (pid {pid}) is gone"


def test_runs_of_a_dead_process_are_killed_and_live_ones_kept(tmp_path):
    pid = _killed_midway(tmp_path)
    live = tracking.start_pipeline_run(tmp_path, "graft", "p-live", {"seed": 0}, {})  # this process: alive

    ended = tracking.reap_orphaned_runs(tmp_path, "graft")
    assert sorted(r["name"] for r in ended) == ["pipeline p-killed", "pretrain"] and {r["pid"] for r in ended} == {pid}
    runs = {r.info.run_id: r for r in _runs(tmp_path)}
    assert runs.pop(live).info.status == "RUNNING"
    _assert_killed_by(list(runs.values()), pid)
    assert tracking.reap_orphaned_runs(tmp_path, "graft") == []  # nothing twice
    assert not (tmp_path / ".graft/lock").read_bytes()  # the lock it took is let go


def test_nothing_is_ended_while_another_graft_works_here_or_owes_the_end(tmp_path):
    from graft.tracking import pending

    _killed_midway(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert tracking.reap_orphaned_runs(tmp_path, "graft") == []
    finally:
        holder.kill()
        holder.wait()
    assert {r.info.status for r in _runs(tmp_path)} == {"RUNNING"}

    for run in _runs(tmp_path):  # their end could not be sent: `graft log --pending` sends it, not the reaper
        pending.owe(tmp_path, run.info.run_id, {"kind": "terminate", "status": "FINISHED"})
    assert tracking.reap_orphaned_runs(tmp_path, "graft") == []


def test_no_store_and_an_unreachable_store_fail_nothing(tmp_path, monkeypatch, capsys):
    assert tracking.reap_orphaned_runs(tmp_path, "graft") == []
    assert not (tmp_path / "mlflow.db").exists()  # not created just to look
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking.reap_orphaned_runs(tmp_path, "graft") == []
    assert capsys.readouterr().err == ""


NOTHING_STALE = ("import sys\n"
                 "import graft.dvc\n"
                 "graft.dvc.stale_stages = lambda root, names=None: {}\n"
                 "from graft.cli import main\n"
                 "rc = main(['-C', sys.argv[1], 'run'])\n"
                 "print('HEAVY', sorted(m for m in ('torch', 'prefect', 'mlflow') if m in sys.modules))\n"
                 "sys.exit(rc)\n")


def test_up_to_date_run_ends_them_only_after_a_killed_holder(workspace):
    """`graft run` with nothing stale looks at MLflow only when the workspace lock says its last holder was
    killed; otherwise it stays light (no MLflow import)."""
    pid = _killed_midway(workspace)
    clean = subprocess.run([sys.executable, "-c", NOTHING_STALE, str(workspace)], cwd=workspace,
                           capture_output=True, text=True)
    assert clean.returncode == 0 and "HEAVY []" in clean.stdout, clean.stdout + clean.stderr
    assert {r.info.status for r in _runs(workspace)} == {"RUNNING"}

    (workspace / ".graft/lock").write_text(f'{{"pid": {pid}, "command": "graft run", "started": 0}}')
    after_kill = subprocess.run([sys.executable, "-c", NOTHING_STALE, str(workspace)], cwd=workspace,
                                capture_output=True, text=True)
    assert after_kill.returncode == 0, after_kill.stdout + after_kill.stderr
    assert f"left RUNNING by a graft process that is gone (pid {pid})" in after_kill.stderr
    _assert_killed_by(_runs(workspace), pid)
    assert not (workspace / ".graft/lock").read_bytes()


def _long_pretraining(ws: Path) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["ingest"]["source"]["per_class"] = 80
    params["pretrain"]["epochs"] = 60  # long enough to be killed part-way on any machine
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_graft_run_killed_during_training_leaves_no_run_running(workspace, prefect_server, capsys):
    _long_pretraining(workspace)
    proc = subprocess.Popen([sys.executable, "-m", "graft.cli", "-C", str(workspace), "run"], cwd=workspace,
                            env={**os.environ, **session_server_env()},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((workspace / ".graft/checkpoints").glob("pretrain/*.pt")):
        assert proc.poll() is None, "graft run ended before it could be killed; make pretrain longer"
        assert time.monotonic() < deadline, "pretrain wrote no checkpoint"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # graft run (on the session's Prefect server: it started none)
    proc.wait()
    running = [r for r in _runs(workspace) if r.info.status == "RUNNING"]
    assert {r.data.tags.get("graft.kind") for r in running} == {"pipeline", "stage"}, running
    assert {r.data.tags["graft.pid"] for r in running} == {str(proc.pid)}

    status = graft_in_process(capsys, workspace, "status", check=True)  # the next graft command, here in-process
    assert f"(pid {proc.pid})" in status.stderr and "marked KILLED" in status.stderr, status.stderr
    runs = _runs(workspace)
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    killed = [r for r in runs if r.info.run_id in {k.info.run_id for k in running}]
    _assert_killed_by(killed, str(proc.pid))
    assert {r.data.tags.get("graft.stage") for r in killed} == {None, "pretrain"}
    assert {r.info.status for r in runs if r not in killed} == {"FINISHED"}  # ingest, prepare: as they were
