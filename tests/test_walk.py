"""graft.walk without Prefect: a real DVC repository with two toy stages, walked with a plain `run`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from graft.dvc import load_dag, stale_stages
from graft.walk import InputsChangedError, Plan, walk
from tests.conftest import dvc_repo

pytestmark = pytest.mark.slow  # real DVC repositories


def _repo(root: Path) -> Path:
    """Stage a reads in.txt and a.x; stage b reads a's output and b.y. Each command logs that it ran."""
    dvc_repo(root,
        "stages:\n"
        "  a:\n    cmd: echo a >> ran.log && cat in.txt > a.txt && echo ${a.x} >> a.txt\n"
        "    deps: [in.txt]\n    params: [a.x]\n    outs: [a.txt]\n"
        "  b:\n    cmd: echo b >> ran.log && cat a.txt > b.txt && echo ${b.y} >> b.txt\n"
        "    deps: [a.txt]\n    params: [b.y]\n    outs: [b.txt]\n",
        {"in.txt": "input\n"})
    _params(root, x=1, y=1)
    return root


def _params(root: Path, x: int, y: int) -> None:
    (root / "params.yaml").write_text(f"a:\n  x: {x}\nb:\n  y: {y}\n")


class Runner:
    """Runs a stage's command as DVC would; remembers which ran."""

    def __init__(self, root: Path, during=None) -> None:
        self.root, self.ran, self.during = root, [], during

    def __call__(self, name: str) -> dict:
        self.ran.append(name)
        cmd = _command(self.root, name)
        subprocess.run(cmd, shell=True, cwd=self.root, check=True)
        if self.during:
            self.during(name)
        return {"seconds": 0.01}


def _command(root: Path, name: str) -> str:
    import yaml

    cmd = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][name]["cmd"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    return cmd.replace("${a.x}", str(params["a"]["x"])).replace("${b.y}", str(params["b"]["y"]))


def _walk(root: Path, plan: Plan = Plan(), during=None) -> tuple[dict, list[str]]:
    run, statuses = Runner(root, during), {}
    walk(root, load_dag(root), plan, run, statuses)
    return {k: v["status"] for k, v in statuses.items()}, run.ran


@pytest.fixture
def repo(tmp_path) -> Path:
    return _repo(tmp_path / "repo")


def test_walk_runs_what_is_stale_records_it_and_restores_what_ran_before(repo):
    assert _walk(repo) == ({"a": "ran", "b": "ran"}, ["a", "b"])
    assert stale_stages(repo) == {}  # recorded: dvc status agrees
    assert _walk(repo) == ({"a": "up to date", "b": "up to date"}, [])

    _params(repo, x=1, y=2)  # only b's param: a is not asked to run
    assert _walk(repo) == ({"a": "up to date", "b": "ran"}, ["b"])
    _params(repo, x=1, y=1)  # back to inputs that ran: DVC's run cache, no command
    assert _walk(repo) == ({"a": "up to date", "b": "restored"}, [])
    assert (repo / "b.txt").read_text() == "input\n1\n1\n"
    (repo / "a.txt").unlink()  # a deleted output
    assert _walk(repo) == ({"a": "restored", "b": "up to date"}, [])
    assert (repo / "ran.log").read_text() == "a\nb\nb\n" and stale_stages(repo) == {}


def test_forced_stages_run_even_when_up_to_date_and_skipped_ones_do_not(repo):
    _walk(repo)
    assert _walk(repo, Plan(forced=("b",))) == ({"a": "up to date", "b": "ran"}, ["b"])
    _params(repo, x=2, y=1)
    assert _walk(repo, Plan(skip=("b",))) == ({"a": "ran", "b": "skipped"}, ["a"])
    assert list(stale_stages(repo)) == ["b"]


def test_a_stage_whose_inputs_change_while_it_runs_is_not_recorded(repo):
    statuses = {}

    def edit_input(name):
        if name == "a":
            (repo / "in.txt").write_text("changed meanwhile\n")

    with pytest.raises(InputsChangedError, match="a: its inputs changed while it ran"):
        walk(repo, load_dag(repo), Plan(), Runner(repo, edit_input), statuses)
    assert statuses == {"a": {"status": "not recorded", "seconds": None}}
    assert "a" in stale_stages(repo)  # dvc.lock was not written for it


def test_walks_sharing_a_lock_dir_take_turns_per_stage_and_fingerprint(repo, tmp_path):
    assert _walk(repo, Plan(lock_dir=str(tmp_path / "locks"))) == ({"a": "ran", "b": "ran"}, ["a", "b"])
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "locks").glob("*.lock")) == ["a", "b"]
