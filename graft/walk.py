"""The DAG walk: the stages in DAG order; each is asked about (DVC decides whether it is stale) just before
its turn, after its upstream stages are recorded, so a stage whose inputs are about to change does not look
stale too early. A stale stage is restored from DVC's run cache when a run with the same inputs was saved
(and it may be: graft.dvc.may_restore), else run; either way its inputs must have held still, and then it
is recorded in dvc.lock (which also saves the run in DVC's run cache).

Plain Python: the Prefect flow (flows/pipeline.py) calls `walk` with a function that runs a stage as a
Prefect task, and unit tests call it with a plain one. What differs between walks (a forced stage, a sweep
variant that stops before register and shares a DVC cache with other variants) is passed in as a `Plan`,
never tested for here.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from graft.dvc import StageDecl, commit_stage, input_fingerprint, may_restore, restore_from_run_cache, stale_stages
from graft.errors import GraftError
from graft.console import say


class InputsChangedError(GraftError, RuntimeError):
    """A stage's inputs changed while it ran; its outputs were not recorded."""


@dataclass(frozen=True)
class Plan:
    """What one walk does differently from a plain `graft run`.

    forced: stages that run even if up to date, and never come from the run cache (`--force` and downstream).
    skip: stages left out (a sweep variant stops before register: only the best is registered).
    lock_dir: where walks sharing one DVC cache take turns per stage and input fingerprint (`stage_slot`),
        so that identical stages run once and the others restore the result; None: no turns.
    run_name, tags: the MLflow pipeline run's name and extra tags (a variant's nesting under its sweep run).
    """

    forced: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    lock_dir: str | None = None
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


RunStage = Callable[[str], dict]  # runs a stage by name; returns its summary with "seconds"


def walk(root: Path, dag: dict[str, StageDecl], plan: Plan, run: RunStage, statuses: dict[str, dict]) -> None:
    """Bring every stage of `dag` up to date, in order. `statuses` is filled as it goes ({"status",
    "seconds"} per stage: up to date, restored, ran, skipped; "failed" or "not recorded" for the stage
    that stopped the walk), so the caller has it even when a stage raises."""
    for name, decl in dag.items():
        if name in plan.skip:
            statuses[name] = {"status": "skipped", "seconds": None}
            continue
        reasons = ["forced"] if name in plan.forced else stale_stages(root, [name]).get(name)
        if not reasons:
            say(f"{name}: up to date")
            statuses[name] = {"status": "up to date", "seconds": None}
            continue
        statuses[name] = {"status": "failed", "seconds": None}  # until it returns
        try:
            statuses[name] = bring_up_to_date(root, decl, reasons, plan, run)
        except InputsChangedError:
            statuses[name] = {"status": "not recorded", "seconds": None}
            raise


def bring_up_to_date(root: Path, decl: StageDecl, reasons: list[str], plan: Plan, run: RunStage) -> dict:
    """Restore or run one stale stage and record it; its status. InputsChangedError (nothing recorded) if
    its inputs changed meanwhile."""
    name = decl.name
    before = input_fingerprint(root, decl)
    with stage_slot(Path(plan.lock_dir), name, before) if plan.lock_dir else nullcontext():
        start = time.perf_counter()
        restored = may_restore(name, forced=name in plan.forced) and restore_from_run_cache(root, name)
        if restored:
            say(f"{name}: restored from DVC's run cache (same inputs ran already)")
            seconds = round(time.perf_counter() - start, 2)
        else:
            say(f"{name}: running ({'; '.join(reasons[:3])})")
            seconds = run(name)["seconds"]
        if input_fingerprint(root, decl) != before:
            how = "was restored" if restored else "ran"
            raise InputsChangedError(f"{name}: its inputs changed while it {how}, so its outputs were not "
                                     f"recorded in dvc.lock; run `graft run` again")
        commit_stage(root, name)  # also saves the run in DVC's run cache
    return {"status": "restored" if restored else "ran", "seconds": seconds}


@contextmanager
def stage_slot(lock_dir: Path, stage: str, fingerprint: str) -> Iterator[None]:
    """Held while a walk runs or restores a stage with these inputs. A second walk (another sweep variant)
    with the same inputs waits here, then finds the first one's result in DVC's run cache."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{stage}-{fingerprint[:16]}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the holder dies
        yield
    finally:
        os.close(fd)
