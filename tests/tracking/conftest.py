"""A real PostgreSQL and a real MLflow tracking server on it: the team setup of the README's "Scaling out".

PostgreSQL comes from GRAFT_TEST_POSTGRES_URL (a server to use; each test module gets its own database
in it) or, by default, from a private throwaway cluster made with the installed binaries (initdb,
pg_ctl) on a free loopback port. PostgreSQL refuses to run as root, so under root the cluster belongs
to the `postgres` user that Debian's packages create. Without PostgreSQL the tests skip, saying why,
except where CI or GRAFT_REQUIRE_POSTGRES is set: there they fail, so CI cannot pass without them
(.ci/run installs PostgreSQL).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _required() -> bool:
    return any(os.environ.get(k, "").lower() not in ("", "0", "false", "no") for k in ("CI", "GRAFT_REQUIRE_POSTGRES"))


def _unavailable(reason: str):
    if _required():
        pytest.fail(f"PostgreSQL is required here (CI or GRAFT_REQUIRE_POSTGRES is set) but {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason}. Install it (Debian: apt-get install postgresql) "
                "or point GRAFT_TEST_POSTGRES_URL at a server")


def _pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl") if (p.parent / "initdb").exists()]
    candidates.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return candidates[-1] if candidates else None


def _wait_for(what: str, ready, proc: subprocess.Popen | None, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def postgres() -> str:
    """The URL of a running PostgreSQL server whose user may create databases (no database part)."""
    url = os.environ.get("GRAFT_TEST_POSTGRES_URL")
    if url:
        yield url.rstrip("/")
        return
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("initdb and pg_ctl are not installed")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("this runs as root and there is no `postgres` user to own the cluster")
        as_user = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="graft-pg-"))  # not under pytest's root-only tmp: the owner must reach it
    if as_user:
        os.chown(home, owner.pw_uid, owner.pw_gid)
    data, log, port = home / "data", home / "postgres.log", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "graft", "-A", "trust", "--no-locale",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    # Loopback only; the socket in the cluster's own folder; durability is not what is tested.
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run([*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "120", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql://graft@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def sql(url: str, statement: str, *args) -> list[tuple]:
    """One statement in autocommit mode (CREATE DATABASE refuses a transaction); the rows it returns."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@dataclass
class MlflowServer:
    uri: str            # what MLFLOW_TRACKING_URI is set to
    backend: str        # the PostgreSQL database it stores runs and the registry in
    artifacts: Path     # --artifacts-destination: where the server puts the artifacts it is sent
    log: Path


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory) -> MlflowServer:
    """`mlflow server` on a new PostgreSQL database, serving artifacts from a local folder."""
    name = f"mlflow_{uuid.uuid4().hex[:8]}"
    sql(f"{postgres}/postgres", f"CREATE DATABASE {name}")
    home = tmp_path_factory.mktemp("mlflow-server")
    backend, artifacts, log, port = f"{postgres}/{name}", home / "artifacts", home / "server.log", free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                                 "--artifacts-destination", str(artifacts), "--serve-artifacts",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                # Without MLflow's job runner (a pool of huey consumer processes for its GenAI
                                # jobs; nothing tracking or the registry uses): 10 fewer processes starting.
                                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=1).read()
            return True
        except OSError:
            return False

    try:
        _wait_for("mlflow server", healthy, proc, log)
        yield MlflowServer(uri=uri, backend=backend, artifacts=artifacts, log=log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sql(f"{postgres}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
