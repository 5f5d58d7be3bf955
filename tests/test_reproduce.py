"""How `graft reproduce` runs the stages of another commit: in one process, or one per stage where that commit's
`graft stage` takes a single name. The commit's code is a stand-in `graft/cli.py` here (the real rerun is tested
end to end in tests/e2e/test_registry.py)."""

from __future__ import annotations

import os
import textwrap

import pytest

from graft.reproduce import RERUN_STAGES, ReproduceError, _rerun_stages

OLD_CLI = """
    import argparse, pathlib
    parser = argparse.ArgumentParser()
    parser.add_argument("-C")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("stage").add_argument("name")
    args = parser.parse_args()
    with open(pathlib.Path(args.C) / "calls.txt", "a") as f:
        f.write(args.name + "\\n")
"""


def commit_with_cli(root, code: str):
    (root / "graft").mkdir()
    (root / "graft/__init__.py").write_text("")
    (root / "graft/cli.py").write_text(textwrap.dedent(code))
    return {**os.environ, "PYTHONPATH": str(root)}


def test_a_commit_whose_graft_stage_takes_one_name_gets_one_process_per_stage(tmp_path):
    env = commit_with_cli(tmp_path, OLD_CLI)
    _rerun_stages(tmp_path, env, "0123456789abcdef")
    assert (tmp_path / "calls.txt").read_text().split() == list(RERUN_STAGES)


def test_a_failing_stage_is_a_reproduce_error_with_its_output(tmp_path):
    env = commit_with_cli(tmp_path, "import sys; sys.exit('pretrain: out of memory')")
    with pytest.raises(ReproduceError, match="the stages at 0123456789 failed:\n.*pretrain: out of memory"):
        _rerun_stages(tmp_path, env, "0123456789abcdef")
