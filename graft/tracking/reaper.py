"""Runs left RUNNING by a killed process: found by the process tags every run carries, ended as KILLED.

Every run carries the pid and host of the process that created it (`graft.pid`, `graft.host`:
`process_tags`), so that a run that process never ended (it was killed) can be found and ended as KILLED
by the next graft command: `reap_orphaned_runs`.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

from graft.tracking import pending
from graft.tracking.store import DEFAULT_DB, client_for, is_server, tracking_uri

ENDED_BY_TAG = "graft.ended_by"


def process_tags() -> dict[str, str]:
    """The tags that name this process, on every run it creates."""
    return {"graft.pid": str(os.getpid()), "graft.host": socket.gethostname()}


def _process_gone(pid: str | None) -> bool:
    """Whether the process `pid` (of this host) no longer runs; False when unsure."""
    try:
        pid_number = int(pid or "")
    except ValueError:
        return False
    if pid_number <= 0:
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    try:  # a zombie (killed, not yet waited for by its parent) does nothing any more either
        return Path(f"/proc/{pid_number}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def reap_orphaned_runs(root: Path, experiment: str) -> list[dict]:
    """End as KILLED every run of `experiment` left RUNNING by a graft process of this host that is gone
    (SIGKILL, out of memory, a closed terminal), tagged `graft.ended_by`; returns those runs
    ({"run_id", "name", "pid"}).

    Only while no other graft process works in this workspace (it takes the workspace lock if it is free,
    and skips otherwise). Runs whose end is owed in .graft/pending/ are left to `graft log --pending`;
    runs of other hosts, and runs without a `graft.pid` tag, are left alone. It never fails the command:
    with no store, an unreachable one or any error it ends nothing (an error is said in one line)."""
    uri = tracking_uri(root)
    try:
        if not os.environ.get("MLFLOW_TRACKING_URI") and not (Path(root).resolve() / DEFAULT_DB).exists():
            return []  # no store yet, so no runs (and do not create one here)
        if is_server(uri):
            from graft.health import why_unreachable

            if why_unreachable(uri, 2.0):
                return []  # the command itself says so, where it needs the store
        elif _sqlite_has_no_orphans(uri):
            return []
        return _end_orphans(root, experiment)
    except Exception as e:  # noqa: BLE001 - housekeeping never fails the command it runs in
        from graft.console import warn

        first = str(e).splitlines()[0][:200] if str(e) else ""
        warn(f"could not look for runs left RUNNING in {uri} ({type(e).__name__}: {first}); the next graft "
             f"command tries again")
        return []


def _sqlite_has_no_orphans(uri: str) -> bool:
    """Whether a local sqlite store certainly holds no orphan: no RUNNING run tagged with a process that is
    gone. Read read-only, without MLflow (whose import and client cost a command seconds), so that the
    usual case, nothing to end, stays fast. False when it cannot tell: MLflow is asked then."""
    if not uri.startswith("sqlite:///"):
        return False
    try:
        with closing(sqlite3.connect(f"file:{uri[len('sqlite:///'):]}?mode=ro", uri=True, timeout=5)) as conn:
            pids = [pid for (pid,) in conn.execute(
                "SELECT tags.value FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                "WHERE runs.status = 'RUNNING' AND tags.key = 'graft.pid'")]
    except sqlite3.Error:
        return False  # not MLflow's schema (yet), locked, unreadable: let MLflow say
    return not any(_process_gone(pid) for pid in pids)


def _end_orphans(root: Path, experiment: str) -> list[dict]:
    from graft.workspace_lock import hold_if_free

    client = client_for(root)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    host = socket.gethostname().replace("'", "")
    running = client.search_runs([exp.experiment_id],
                                 f"attributes.status = 'RUNNING' and tags.`graft.host` = '{host}'", max_results=1000)
    owed = set(pending.owed(root))
    orphans = [r for r in running if r.info.run_id not in owed and _process_gone(r.data.tags.get("graft.pid"))]
    if not orphans:
        return []
    ended = []
    with hold_if_free(root, "graft: ending MLflow runs left RUNNING by a killed graft process") as free:
        if not free:
            return []  # a live graft works here; the next command looks again
        for run in orphans:
            if client.get_run(run.info.run_id).info.status != "RUNNING":
                continue  # ended meanwhile
            pid = run.data.tags["graft.pid"]
            client.set_tag(run.info.run_id, ENDED_BY_TAG, f"graft: the process that ran it (pid {pid}) is gone")
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append({"run_id": run.info.run_id, "name": run.info.run_name, "pid": pid})
    return ended
