"""`graft serve` and prefect.yaml create real deployments with their cron schedule, read back from the Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import graft_in_process, make_workspace

pytestmark = pytest.mark.e2e


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def read_deployment(name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def wait_for_deployment(name: str, proc: subprocess.Popen, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = read_deployment(name)
        if deployment is not None:
            return deployment
        if proc.poll() is not None:
            raise AssertionError(f"graft serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        time.sleep(1)
    raise AssertionError(f"no deployment {name} after {timeout}s")


def test_graft_serve_registers_the_retraining_deployment_with_its_schedule(workspace, prefect_server):
    env = {**os.environ, "PREFECT_API_URL": api_url()}
    proc = subprocess.Popen([sys.executable, "-m", "graft.cli", "-C", str(workspace), "serve", "--cron", "0 3 * * *",
                             "--timezone", "Europe/Paris", "--name", "nightly"],
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deployment = wait_for_deployment("graft-retrain/nightly", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == \
        [("0 3 * * *", "Europe/Paris", True)]
    assert deployment.parameters == {"root": str(workspace)}


def test_graft_serve_refuses_clearly_without_a_server_or_with_a_bad_cron(workspace, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # In this process, with Prefect's settings as a shell with no profile and no PREFECT_API_URL would have them
    # (its default: no server), whatever server this test session started.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        proc = graft_in_process(capsys, workspace, "serve", "--cron", "0 3 * * *")
        assert proc.returncode == 2 and "make server" in proc.stderr and "PREFECT_API_URL" in proc.stderr
        proc = graft_in_process(capsys, workspace, "serve", "--cron", "every night")
        assert proc.returncode == 2 and "--cron 'every night'" in proc.stderr
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        proc = graft_in_process(capsys, workspace, "serve", "--cron", "0 3 * * *")
    assert proc.returncode == 1 and "not reachable" in proc.stderr and "Traceback" not in proc.stderr


def test_prefect_yaml_deploys_to_a_work_pool(tmp_path, prefect_server):
    """What the README tells a team to run: create the pool, then `prefect deploy --all` from the repository root."""
    ws = make_workspace(tmp_path / "ws")
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "PREFECT_API_URL": api_url(), "PWD": str(ws)}
    for cmd in ([prefect, "work-pool", "create", "graft", "--type", "process", "--overwrite"],
                [prefect, "--no-prompt", "deploy", "--all"]):
        proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    deployment = read_deployment("graft-retrain/scheduled")
    assert deployment.work_pool_name == "graft" and deployment.entrypoint == "flows/retrain.py:retrain"
    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [("0 3 * * *", "UTC")]
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ws)}}]
    sweep = read_deployment("graft-sweep/compare")
    assert sweep.entrypoint == "flows/sweep.py:sweep" and sweep.parameters["specs"] == ["finetune.lr=0.003,0.01"]
    assert not sweep.schedules  # sweeps run on request
