"""One workspace, one writer: a second graft process is refused at once, naming the first;
a lock left by a killed process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from graft.workspace_lock import WorkspaceBusy, hold
from tests.conftest import dvc, graft_in_process

pytestmark = pytest.mark.faults

HOLDER = ("import sys, time\n"
          "from graft.workspace_lock import hold\n"
          "with hold(sys.argv[1], 'graft run -S finetune.lr=0.1'):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(120)\n")


@pytest.fixture
def holder(workspace):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workspace)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_second_writer_is_refused_naming_the_first(workspace, holder, capsys):
    for args in (["run"], ["stage", "ingest"]):
        proc = graft_in_process(capsys, workspace, *args)
        assert proc.returncode == 1, proc.stdout
        assert f"PID {holder.pid}" in proc.stderr and "graft run -S finetune.lr=0.1" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (workspace / "data/raw").exists()  # nothing ran

    out = dvc(workspace, "repro", check=False)
    assert out.returncode != 0 and f"PID {holder.pid}" in out.stdout + out.stderr


def test_dry_run_is_not_refused(workspace, holder, capsys):
    assert "would run" in graft_in_process(capsys, workspace, "run", "--dry-run", check=True).stdout


def test_lock_of_a_killed_process_is_taken_over(workspace, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with hold(workspace, "graft run") as killed:  # named, so that its MLflow runs can be ended
        assert killed["pid"] == holder.pid and killed["command"] == "graft run -S finetune.lr=0.1"
        with pytest.raises(WorkspaceBusy, match=f"PID {os.getpid()}"):
            with hold(workspace, "graft stage prepare"):
                pass


def test_lock_is_released_after_an_error(workspace):
    with pytest.raises(RuntimeError):
        with hold(workspace, "graft run"):
            raise RuntimeError("stage failed")
    with hold(workspace, "graft run") as killed:  # would raise WorkspaceBusy if the failed holder had kept it
        assert killed is None  # it let go: nothing to clean up after it
