"""The command line as a tool among others: quiet in a pipe whose reader has gone."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # graft in a subprocess, as a shell pipes it


def test_a_closed_pipe_ends_the_command_quietly(workspace):
    """`graft run --dry-run | head -1`: the reader goes away before graft has written everything."""
    for args in (["run", "--dry-run"], ["status"]):
        proc = subprocess.Popen([sys.executable, "-m", "graft.cli", "-C", str(workspace), *args], cwd=workspace,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # before graft writes a line: its every write meets a closed pipe
        err = proc.stderr.read()
        assert proc.wait() == 141, err
        assert err == "", err
