from pathlib import Path

import pytest

from graft.dvc import (EFFECTS_OUTSIDE_DVC, commit_stage, downstream, input_fingerprint, load_dag, may_restore,
                       restore_from_run_cache, stale_stages)
from graft.stages import STAGES
from tests.conftest import dvc, dvc_repo

REPO = Path(__file__).resolve().parents[1]


def test_downstream_follows_outputs_to_dependents():
    dag = load_dag(REPO)
    assert downstream(dag, "finetune") == ["finetune", "evaluate", "register"]
    assert downstream(dag, "baseline") == ["baseline", "evaluate", "register"]
    assert downstream(dag, "ingest") == list(dag)


def test_fingerprint_changes_with_params_and_deps(workspace):
    decl = load_dag(workspace)["evaluate"]
    first = input_fingerprint(workspace, decl)
    assert input_fingerprint(workspace, decl) == first
    text = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(text.replace("calibration_bins: 15", "calibration_bins: 10"))
    second = input_fingerprint(workspace, decl)
    assert second != first
    (workspace / "graft/metrics.py").write_text((workspace / "graft/metrics.py").read_text() + "\n# edit\n")
    assert input_fingerprint(workspace, decl) != second


def test_a_stale_stage_may_be_restored_unless_forced_or_its_effect_is_outside_dvc():
    assert may_restore("finetune", forced=False)
    assert not may_restore("finetune", forced=True)  # --force means run it
    assert not may_restore("register", forced=False)  # the registry is not in the run cache
    assert not may_restore("register", forced=True)
    assert set(EFFECTS_OUTSIDE_DVC) <= set(STAGES)  # a renamed stage cannot drop out of the set unseen


def _toy_repo(root: Path) -> Path:
    """A DVC repository with one stage that reads a dep and a param, and logs every time its command runs."""
    return dvc_repo(root, "stages:\n  s:\n    cmd: echo ran >> commands.log && cat in.txt params.yaml > out.txt\n"
                          "    deps: [in.txt]\n    params: [s.x]\n    outs: [out.txt]\n", {"in.txt": "a\n"})


def _set_x(root: Path, x: int) -> None:
    (root / "params.yaml").write_text(f"s:\n  x: {x}\n")


@pytest.mark.slow  # a real DVC repository, `dvc repro` twice
def test_restore_from_run_cache_checks_out_a_saved_run_without_running_it(tmp_path):
    root = _toy_repo(tmp_path / "repo")
    _set_x(root, 1)
    dvc(root, "repro")
    first = (root / "out.txt").read_bytes()
    _set_x(root, 2)
    dvc(root, "repro")
    assert (root / "commands.log").read_text() == "ran\nran\n"

    _set_x(root, 1)  # back to inputs that ran already: a run-cache hit
    assert restore_from_run_cache(root, "s")
    assert (root / "out.txt").read_bytes() == first
    assert stale_stages(root, ["s"])  # not recorded until the caller commits
    commit_stage(root, "s")
    assert stale_stages(root) == {}

    (root / "out.txt").write_text("edited by hand\n")  # an output that DVC has no copy of is replaced
    assert restore_from_run_cache(root, "s")
    assert (root / "out.txt").read_bytes() == first
    commit_stage(root, "s")
    assert stale_stages(root) == {}

    _set_x(root, 3)  # inputs that never ran: nothing to restore; the stage must run
    assert not restore_from_run_cache(root, "s")
    assert (root / "commands.log").read_text() == "ran\nran\n"  # the command never ran here

    (root / "in.txt").unlink()  # a missing dependency: not DVC's error to raise here; the stage runs and says so
    assert not restore_from_run_cache(root, "s")


@pytest.mark.slow  # a real DVC repository, `dvc repro`
def test_commit_writes_the_lock_file_dvc_itself_writes(tmp_path):
    """graft records stages through DVC's commit, which reads dvc.lock with libyaml there instead of DVC's
    round-trip parser (graft.dvc._read_lock_files_with_libyaml): the lock it writes must be the one `dvc repro`
    writes, to the byte, values that YAML could read back as another type included, and DVC must find the
    stages it recorded up to date."""
    params = ("s:\n  x: 1.0e-05\n  words: ['yes', 'on', '1e3', '', 'null', 'données', 'a: b']\n  none: null\n"
              "  flag: true\n  big: 1.0e+20\n")
    root = dvc_repo(tmp_path / "repo", "stages:\n  s:\n    cmd: cat données.txt params.yaml > out.txt\n"
                                       "    deps: [données.txt]\n    params: [s]\n    outs: [out.txt]\n"
                                       "  t:\n    cmd: cp out.txt t.txt\n    deps: [out.txt]\n    outs: [t.txt]\n",
                    {"données.txt": "a\n", "params.yaml": params})
    dvc(root, "repro")
    by_dvc = (root / "dvc.lock").read_bytes()

    (root / "dvc.lock").unlink()
    commit_stage(root, "s")
    commit_stage(root, "t")
    assert (root / "dvc.lock").read_bytes() == by_dvc
    assert stale_stages(root) == {}
    (root / "params.yaml").write_text(params.replace("flag: true", "flag: false"))
    assert list(stale_stages(root)) == ["s"]  # what the lock holds is read back as the values it was written from
