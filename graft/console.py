"""What graft says to the user: one place for plain progress lines (no heavy imports)."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
