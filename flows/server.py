"""The Prefect API graft's flows report to: the server PREFECT_API_URL names, or a temporary one that
graft starts itself, early, and stops when it exits.

Without `PREFECT_API_URL`, Prefect starts a temporary server when the first flow runs and waits for
it: about 7 s on 2 cores (BENCHMARKS.md), during which nothing else happens, and the client process
first imports Prefect's whole server package (2 s) only to spawn it. `start_early()` spawns the same
server (Prefect's own command and settings, `_spawn`) before graft imports torch, MLflow and the
pipeline, so that its start-up runs on the other core meanwhile; entering what it returns waits for
the server and points Prefect at it. `shared_api()` does the same for a sweep, whose variant processes
must all report to one server. With `PREFECT_API_URL` set (a persistent server), nothing is started.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from graft import tracking
from graft.errors import GraftError, UsageError
from graft.health import why_unreachable

STARTUP_TIMEOUT_S = 120  # a loaded 2-core machine can take a minute; Prefect's own default is 20 s


def _spawn(port: int, errors: IO[bytes]) -> subprocess.Popen:
    """Prefect's temporary API server on `port`, as Prefect itself would start it.

    The one place graft relies on Prefect's internals. Prefect 3.9 has no public way to start a temporary
    server without waiting for it: `prefect server start` runs a persistent server with every service
    and the UI, `prefect.testing.utilities.prefect_test_harness` is for tests, and
    `prefect.server.api.server.SubprocessASGIServer` (what Prefect uses) blocks in `start()` until the
    server answers and costs the caller an import of Prefect's whole server package. So this repeats
    SubprocessASGIServer._run_uvicorn_command: the same uvicorn command and settings, including the
    private ones that tell the server it is temporary (no UI; only the services a temporary server runs).
    Compare it with that method when upgrading Prefect.
    """
    import prefect
    from prefect.settings import get_current_settings

    private = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parents[1]), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, **private, **get_current_settings().to_environment_variables(exclude_unset=True)},
        stdout=subprocess.DEVNULL, stderr=errors)


class TemporaryServer:
    """A Prefect API server in a child process, stopped when this process exits."""

    def __init__(self) -> None:
        self.port = _free_port()
        # Its errors go to a file, not a pipe: nobody reads a pipe during a long run, and a full one
        # would block the server (and with it the run).
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - open while the server runs; stop() closes it
        self.process = _spawn(self.port, self.errors)
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


def start_early() -> Callable[[], contextlib.AbstractContextManager]:
    """Start Prefect's temporary server (when no PREFECT_API_URL is set) and import torch and MLflow while
    it starts, on the other core. Returns what to enter around the flow call: it waits for the server and
    points Prefect at it."""
    server = temporary_server()
    tracking.preload()  # every pipeline run needs MLflow and torch
    import torch  # noqa: F401

    return server.wait if server else contextlib.nullcontext


@contextlib.contextmanager
def shared_api() -> Iterator[None]:
    """One Prefect API for this process and the processes it starts. Without a configured one, every
    process starts a temporary server of its own, so each sweep variant's flow run would land on a
    different one: start one here and hand its URL to the child processes (they inherit the environment)."""
    server = temporary_server()
    if server is None:
        yield
        return
    try:
        with server.wait():
            os.environ["PREFECT_API_URL"] = server.api_url
            try:
                yield
            finally:
                os.environ.pop("PREFECT_API_URL", None)
    finally:
        server.stop()


def persistent_api(what: str) -> str:
    """The URL of the Prefect server PREFECT_API_URL names, once it answers. `what` (a command) needs a
    server that outlives it; UsageError when none is configured, GraftError when it does not answer."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        raise UsageError(f"{what} needs a Prefect server that outlives it, for the schedule and the run history: "
                         "start one with `make server` (UI on http://127.0.0.1:4200), then "
                         f"`export PREFECT_API_URL=http://127.0.0.1:4200/api` and run {what} again")
    if reason := why_unreachable(api):
        raise GraftError(f"the Prefect server at PREFECT_API_URL={api} is not reachable ({reason}); start it with "
                         f"`make server`, or point PREFECT_API_URL at a running one")
    return api


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
