"""`graft run` without PREFECT_API_URL: graft starts Prefect's temporary server itself, early, on 127.0.0.1
only, uses it for the whole run, and stops it when the run ends."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graft.files import read_json

pytestmark = pytest.mark.e2e


def processes_with(home: Path) -> dict[int, str]:
    """Pid and command line of each live process whose environment names this PREFECT_HOME."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"PREFECT_HOME={home}".encode() in (proc / "environ").read_bytes():
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of each TCP socket the process listens on, as the kernel has it bound."""
    sockets = set()
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:["):-1])
    bound = set()
    for table in ("tcp", "tcp6"):
        for line in (Path("/proc") / str(pid) / "net" / table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in sockets:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            bound.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return bound


def flow_runs(home: Path) -> int:
    with contextlib.closing(sqlite3.connect(home / "prefect.db")) as db:
        return db.execute("SELECT count(*) FROM flow_run").fetchone()[0]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_graft_run_starts_and_stops_its_own_temporary_server_on_loopback(finished_copy, migrated_prefect_home):
    workspace = finished_copy  # a finished run: the flow runs register only (the server is what is tested)
    # Its own database (already migrated, as after a first run), and a way to find the server's process.
    home = migrated_prefect_home
    runs_before = flow_runs(home)
    env = {**os.environ, "PREFECT_API_URL": "", "PREFECT_HOME": str(home)}
    run = subprocess.Popen([sys.executable, "-m", "graft.cli", "-C", str(workspace), "run", "--force", "register"],
                           cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # While the run goes on, where its server listens, as the kernel says (not what a flag asked for).
    bound = set()
    while run.poll() is None and not bound:
        for pid, cmdline in processes_with(home).items():
            if pid != run.pid and "uvicorn" in cmdline:
                try:
                    bound = listening_addresses(pid)
                except OSError:  # gone meanwhile
                    pass
        time.sleep(0.2)
    stdout, stderr = run.communicate(timeout=600)
    output = stdout + stderr
    assert run.returncode == 0, output
    assert bound and {address for address, _ in bound} == {"127.0.0.1"}, bound

    statuses = {name: v["status"] for name, v in read_json(workspace / ".graft/last_run.json").items()}
    assert statuses.pop("register") == "ran" and set(statuses.values()) == {"up to date"}, statuses
    assert "Beginning flow run" in output and "Finished in state Completed" in output
    # Prefect announces the server it starts itself; graft's started first, so Prefect never had to.
    assert "Starting temporary server" not in output, output
    assert flow_runs(home) > runs_before, "the flow run was not recorded in this PREFECT_HOME's database"
    assert processes_with(home) == {}, "the temporary server outlived `graft run`"
