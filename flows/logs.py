"""What Prefect prints on the console while graft's flows run.

A stage that fails with a GraftError (bad data, a bad parameter: a message that already says what is
wrong and how to fix it) would otherwise be reported four times on the console: Prefect logs the task's
failure with a traceback, the task's Failed state, the flow's failure with a traceback again, and the
flow's Failed state; graft then prints it once more as `graft: error: ...`. `graft_errors_said_once()`
drops those four console lines for GraftErrors only, so the user reads the error once; other exceptions
(bugs) keep Prefect's tracebacks. Only the console handlers are filtered: Prefect's API log handler, and
so the Prefect UI of a persistent server, still gets everything. `graft -v` leaves the console as it is.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from graft.errors import GraftError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _GraftErrorsOnce(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.failed: set[str] = set()  # "DataError: " for each GraftError Prefect reported

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(RUN_LOGGERS):
            return True
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GraftError):
            self.failed.add(f"{type(error).__name__}: ")
            return False
        if self.failed:
            message = record.getMessage()
            if message.startswith("Finished in state"):
                return not any(kind in message for kind in self.failed)
        return True


@contextmanager
def graft_errors_said_once(enabled: bool = True) -> Iterator[None]:
    """While open, Prefect's console reports of a GraftError are dropped (graft prints the error itself)."""
    if not enabled:
        yield
        return
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect's console handler is on the root logger from here on

    once = _GraftErrorsOnce()
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    for handler in handlers:
        handler.addFilter(once)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(once)
