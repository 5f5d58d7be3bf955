"""Scheduled retraining: retrain only when the data changed, pass the result through the promotion
gate, and report the outcome (a Prefect Markdown artifact, plus the webhook when one is set).

Served on a schedule by `graft serve --cron ...`, or deployed to a work pool from prefect.yaml.
A failed run leaves the champion where it was: only `register`, the last stage, moves aliases."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Completed

import graft.retrain
from flows.server import persistent_api
from graft import tracking
from graft.errors import UsageError
from graft.files import read_json_or_empty
from graft.paths import Paths
from graft.console import say, warn
from graft.workspace_lock import hold
from tasks.retrain import check_for_changes, current_champion, publish_report

@flow(name="graft-retrain", log_prints=True)
def retrain(root: str = "."):
    """Retrain when the data changed since the champion was trained; otherwise record why not.
    Every run, whatever its end, publishes a report and notifies the webhook."""
    paths = Paths.at(root)
    check, pipeline_started = None, False
    try:
        with hold(paths.root, "graft retrain"):
            check = check_for_changes(str(paths.root))
            say(check.summary)
            if not check.changed:
                outcome = graft.retrain.skipped_outcome(check)
                publish_report(str(paths.root), outcome)
                return Completed(message=check.summary[:500], data=outcome.to_json())
            pipeline_started = True
            statuses = run_pipeline(paths, check)
    except BaseException as error:  # a crash (SIGTERM from a cancel) is reported too, then re-raised
        statuses = read_json_or_empty(paths.state / "last_run.json") if pipeline_started else {}
        outcome = graft.retrain.failed_outcome(check, paths.root, statuses, error, _champion_or_none(paths))
        try:
            publish_report(str(paths.root), outcome)
        except Exception as e:  # noqa: BLE001 - never hide the run's own error behind the report's
            warn(f"retrain: could not publish the report of this failed run: {e}")
        raise
    outcome = graft.retrain.trained_outcome(check, paths.root, statuses, current_champion(str(paths.root)))
    publish_report(str(paths.root), outcome)
    verdict = (f"v{outcome.version} {'promoted' if outcome.promoted else 'kept as challenger'}"
               if outcome.version else "nothing registered")
    return Completed(message=f"retrained: {verdict}", data=outcome.to_json())


def run_pipeline(paths: Paths, check: graft.retrain.ChangeCheck) -> dict:
    """The pipeline as a subflow, forcing the stage the check names (ChangeCheck.stage_to_force)."""
    from flows.pipeline import pipeline

    return pipeline(root=str(paths.root), force=check.stage_to_force)


def _champion_or_none(paths: Paths) -> dict | None:
    try:
        return current_champion(str(paths.root))
    except Exception:  # noqa: BLE001 - the store may be what failed; the report says so already
        return None


def serve(root: Path, cron: str, timezone: str, name: str) -> None:
    """Register the deployment graft-retrain/<name> on the Prefect server PREFECT_API_URL names and run its
    scheduled flow runs from this process until Ctrl-C (`graft serve`)."""
    from prefect.schedules import Cron

    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as e:
        raise UsageError(f"--cron {cron!r}: {e}; five fields: minute hour day-of-month month day-of-week") from e
    api = persistent_api("graft serve")
    tracking.check_reachable(root)
    print(f"serving graft-retrain/{name} on {api}: cron {cron!r} ({timezone}), workspace {root}")
    retrain.serve(name=name, schedules=[schedule], parameters={"root": str(root)}, tags=["graft"],
                  description=f"graft scheduled retraining of {root}")
