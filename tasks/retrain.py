"""Prefect tasks of scheduled retraining: the change check, the champion lookup and the report. The logic
is in graft/retrain.py; retries belong on I/O, as the check and the lookup read the tracking store."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

import graft.retrain
from graft import tracking
from graft.config import load_params
from graft.files import write_json
from graft.paths import Paths

REPORT_KEY = "graft-retrain-report"


@task(name="check-for-changes", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def check_for_changes(root: str) -> graft.retrain.ChangeCheck:
    paths = Paths.at(root)
    params = load_params(paths.params)
    tracking.check_reachable(paths.root)
    name = params.tracking.model_name
    return graft.retrain.check_for_changes(paths.root, params, tracking.champion_version(paths.root, name),
                                    tracking.alias_version(paths.root, name, "challenger"))


@task(name="current-champion", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def current_champion(root: str) -> dict | None:
    paths = Paths.at(root)
    return tracking.champion_version(paths.root, load_params(paths.params).tracking.model_name)


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(root: str, outcome: graft.retrain.Outcome) -> None:
    """The Markdown report as a Prefect artifact, the outcome in .graft/retrain.json (graft status
    shows it), and the webhook."""
    paths = Paths.at(root)
    params = load_params(paths.params)
    report = graft.retrain.report_markdown(outcome, params.tracking.model_name)
    create_markdown_artifact(markdown=report, key=REPORT_KEY, description=outcome.reason[:250])
    write_json(paths.state / "retrain.json", outcome.to_json())
    graft.retrain.notify(graft.retrain.webhook_url(params), outcome, params.tracking.model_name)
