"""Prefect's temporary API server, started by graft at the top of a run rather than by Prefect at the
first flow call.

Without `PREFECT_API_URL`, Prefect starts a temporary server when the first flow runs and waits for
it: about 7 s on 2 cores (BENCHMARKS.md), during which nothing else happens, and the client process
first imports Prefect's whole server package (2 s) only to spawn it. `temporary_server()` spawns the
same server (Prefect's own command and settings: `SubprocessASGIServer` in
prefect/server/api/server.py) before graft imports torch, MLflow and the pipeline, so that its
start-up runs on the other core meanwhile; `wait()` then points Prefect at it. With
`PREFECT_API_URL` set (a persistent server), nothing is started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graft.health import why_unreachable

STARTUP_TIMEOUT_S = 120  # a loaded 2-core machine can take a minute; Prefect's own default is 20 s

# What Prefect sets for its temporary server: no UI, and the server knows it is temporary (it runs
# only the services a temporary server needs).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


class TemporaryServer:
    """A Prefect API server in a child process, stopped when this process exits."""

    def __init__(self) -> None:
        import prefect
        from prefect.settings import get_current_settings

        self.port = _free_port()
        # Its errors go to a file, not a pipe: nobody reads a pipe during a long run, and a full one
        # would block the server (and with it the run).
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - open while the server runs; stop() closes it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parents[1]), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **SERVER_ENV, **get_current_settings().to_environment_variables(exclude_unset=True)},
            stdout=subprocess.DEVNULL, stderr=self.errors)
        atexit.register(self.stop)  # after Prefect's own exit hooks have sent their last logs and events

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait(self) -> contextlib.AbstractContextManager:
        """Block until the server answers; returns the settings context that points Prefect at it."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self.errors.seek(0)
                error = self.errors.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"Prefect's temporary API server exited with code {self.process.returncode} "
                                   f"before answering:\n{error}\nStart one yourself (`make server`) and set "
                                   f"PREFECT_API_URL=http://127.0.0.1:4200/api")
            if why_unreachable(self.api_url, timeout=2) is None:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prefect's temporary API server did not answer within {STARTUP_TIMEOUT_S} s; "
                                   f"start one yourself (`make server`) and set PREFECT_API_URL")
            time.sleep(0.1)
        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.errors.close()


def temporary_server() -> TemporaryServer | None:
    """Start Prefect's temporary server now, unless Prefect is configured to use another one (or none)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None  # Prefect's own behaviour: use that server, or refuse for lack of one
    return TemporaryServer()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
