"""Rerun the pipeline behind a registered model version from its exact commit, params and data,
and check that the metrics come out the same (they must, bit for bit, on the same machine,
torch build and thread count).

Nothing is registered: the rerun stops before `register`, and it logs to a tracking store of its
own inside the temporary worktree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from graft.errors import GraftError
from graft.paths import Paths
from graft.console import say, warn

RERUN_STAGES = ("prepare", "pretrain", "replace_head", "finetune", "baseline", "evaluate")
COMPARED = ("pretrain", "finetune", "baseline", "evaluate")
# evaluate's per-class report is no DVC metric, so the pipeline run does not log it with metrics/*.json;
# the evaluate stage run holds the same numbers under this name.
PER_CLASS = "evaluate_per_class"
PER_CLASS_ARTIFACT = "per_class_report.json"


class ReproduceError(GraftError):
    """The run cannot be reproduced here; the message says what is missing."""


@dataclass
class Outcome:
    matched: bool
    rows: list[tuple[str, object, object]] = field(default_factory=list)  # (metric, registered, reproduced)
    worktree: Path | None = None


def _run(cmd: list[str], cwd: Path, env: dict | None = None, what: str = "") -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ReproduceError(f"{what or ' '.join(cmd)} failed:\n{(proc.stderr or proc.stdout)[-3000:]}")
    return proc


def _rerun_stages(worktree: Path, env: dict, commit: str) -> None:
    """RERUN_STAGES with that commit's code, in one process (its imports of torch and MLflow, 4 to 6 s, are paid
    once rather than per stage). A commit whose `graft stage` takes one name (argparse refuses the others
    with exit status 2) gets one process per stage."""
    graft = [sys.executable, "-m", "graft.cli", "-C", str(worktree), "stage"]
    say(f"reproduce: running {', '.join(RERUN_STAGES)} with the code of {commit[:10]}")
    proc = subprocess.run([*graft, *RERUN_STAGES], cwd=worktree, capture_output=True, text=True, env=env)
    if proc.returncode == 2 and "unrecognized arguments" in proc.stderr:
        for stage in RERUN_STAGES:
            say(f"reproduce: running {stage}")
            _run([*graft, stage], cwd=worktree, env=env, what=f"stage {stage} at {commit[:10]}")
    elif proc.returncode != 0:
        raise ReproduceError(f"the stages at {commit[:10]} failed:\n{(proc.stderr or proc.stdout)[-3000:]}")


def _numbers(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def _registered_per_class(root: Path, info: dict, dst: Path) -> dict | None:
    """The per-class report of the pipeline run behind the version, from its evaluate stage run; None when
    evaluate did not run in that pipeline (it was up to date, and its report is with an earlier run)."""
    from graft import tracking

    runs = [r for r in info["stages"] if r["tags"].get("graft.stage") == "evaluate" and r["status"] == "FINISHED"]
    if not runs:
        return None
    return json.loads(Path(tracking.download_run_file(root, runs[-1]["run_id"], PER_CLASS_ARTIFACT, dst)).read_text())


def reproduce(root: Path, uri: str, keep: bool = False) -> Outcome:
    from graft import tracking
    from graft.lineage import describe_version

    info = describe_version(root, uri)
    parent = info["parent"]
    if parent is None:
        raise ReproduceError(f"{uri}: its register run has no pipeline run; nothing to reproduce from")
    commit = info["commit"]
    if commit == "unknown":
        raise ReproduceError(f"{uri}: no git commit was recorded with it")
    if info["dirty"] == "true":
        warn(f"the pipeline behind {uri} ran with uncommitted changes; commit {commit[:10]} may not hold that code")

    work = Path(tempfile.mkdtemp(prefix="graft-reproduce-"))
    worktree = work / "worktree"
    say(f"reproduce: checking out {commit[:10]} into {worktree}")
    _run(["git", "worktree", "add", "--detach", str(worktree), commit], cwd=root, what="git worktree add")
    try:
        logged = work / "logged"
        for name in ("params.yaml", "dvc.lock"):
            path = tracking.download_run_file(root, parent["run_id"], f"pipeline/{name}", logged)
            shutil.copy2(path, worktree / name)
        registered = {}
        for stage in COMPARED:
            path = tracking.download_run_file(root, parent["run_id"], f"metrics/{stage}.json", logged)
            registered[stage] = json.loads(Path(path).read_text())

        dvc = str(Path(sys.executable).with_name("dvc"))
        # The worktree shares this repository's DVC cache, so data versions made here are available.
        _run([dvc, "cache", "dir", "--local", str((Path(root) / ".dvc" / "cache").resolve())], cwd=worktree)
        say("reproduce: restoring data/raw from the DVC cache")
        if subprocess.run([dvc, "checkout", "data/raw"], cwd=worktree, capture_output=True).returncode != 0:
            say("reproduce: not in the local cache; trying the DVC remote")
            _run([dvc, "pull", "data/raw"], cwd=worktree,
                 what="restoring data/raw (neither the DVC cache nor a remote has it; `dvc push` from where it ran)")

        env = {**os.environ, "PYTHONPATH": str(worktree),  # that commit's code, not this checkout's
               "MLFLOW_TRACKING_URI": f"sqlite:///{worktree / 'mlflow.db'}",
               "GRAFT_PIPELINE_RUN_ID": f"reproduce-{info['pipeline_run_id']}"}
        _rerun_stages(worktree, env, commit)

        compared = {stage: (registered[stage], json.loads((worktree / "metrics" / f"{stage}.json").read_text()))
                    for stage in COMPARED}
        per_class = Paths.at(worktree).report(PER_CLASS)
        if per_class.exists():  # a commit from before it has the per-class numbers in metrics/evaluate.json
            theirs = _registered_per_class(root, info, logged / "evaluate")
            if theirs is None:
                say(f"reproduce: per-class numbers not compared: evaluate did not run in the pipeline behind {uri}")
            else:
                compared[PER_CLASS] = (theirs, json.loads(per_class.read_text()))
        rows, matched = [], True
        for name, (registered_doc, reproduced_doc) in compared.items():
            theirs, mine = _numbers(registered_doc), _numbers(reproduced_doc)
            for key in sorted(set(mine) | set(theirs)):
                rows.append((f"{name}.{key}", theirs.get(key), mine.get(key)))
                matched &= theirs.get(key) == mine.get(key)
        return Outcome(matched, rows, worktree if keep else None)
    finally:
        if not keep:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=root, capture_output=True)
            shutil.rmtree(work, ignore_errors=True)


def format_outcome(outcome: Outcome, uri: str) -> str:
    """The headline metrics side by side, every differing one, and the verdict."""
    shown = [r for r in outcome.rows if r[0].count(".") == 1 or r[1] != r[2]]
    lines = [f"{'metric':<36}{'registered':>14}{'reproduced':>14}"]
    for key, theirs, mine in shown:
        mark = "" if theirs == mine else "   <- differs"
        lines.append(f"{key:<36}{theirs!s:>14}{mine!s:>14}{mark}")
    differing = sum(theirs != mine for _, theirs, mine in outcome.rows)
    verdict = (f"exact match: all {len(outcome.rows)} metrics reproduced bit for bit" if outcome.matched
               else f"MISMATCH: {differing} of {len(outcome.rows)} metrics differ (an exact match needs the same "
                    f"machine, torch build and thread count)")
    lines.append(f"\n{uri}: {verdict}")
    if outcome.worktree:
        lines.append(f"worktree kept at {outcome.worktree}")
    return "\n".join(lines)
