"""`graft run` without PREFECT_API_URL: graft starts Prefect's temporary server itself, early, uses it
for the whole run, and stops it when the run ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from graft.files import read_json
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def processes_with(home: Path) -> list[str]:
    """Command lines of live processes whose environment names this PREFECT_HOME."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"PREFECT_HOME={home}".encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_graft_run_starts_and_stops_its_own_temporary_server(workspace, tmp_path):
    home = tmp_path / "prefect-home"  # its own database, and a way to find the server's process
    proc = run_cli(workspace, "run", env={"PREFECT_API_URL": "", "PREFECT_HOME": str(home)})
    output = proc.stdout + proc.stderr
    assert all(v["status"] == "ran" for v in read_json(workspace / ".graft/last_run.json").values())
    assert "Beginning flow run" in output and "Finished in state Completed" in output
    # Prefect announces the server it starts itself; graft's started first, so Prefect never had to.
    assert "Starting temporary server" not in output, output
    assert (home / "prefect.db").exists(), "the flow run was not recorded in this PREFECT_HOME's database"
    assert processes_with(home) == [], "the temporary server outlived `graft run`"
