"""Scheduled retraining, the domain half: has anything changed since the champion was trained,
what to tell people about a retraining run, and where to tell it.

"Changed" means one of:
- DVC reports stale stages (new images under data/sources/, edited params or code);
- the raw data dvc.lock records differs from the data the champion was trained on (its
  `graft.data_hash` tag), e.g. after a `dvc pull` or a checkout of another dvc.lock;
- an image-folder source outside the repository (a folder other systems write into, which DVC
  cannot watch) no longer matches the fingerprint `ingest` recorded for it;
- there is no champion yet.
The Prefect flow (flows/retrain.py) only wires these together.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from graft.config import Params
from graft.dvc import locked_hash, stale_stages
from graft.data.sources import external_folders, folder_fingerprint
from graft.files import read_json_or_empty
from graft.paths import Paths
from graft.console import warn


@dataclass
class ChangeCheck:
    changed: bool
    reasons: list[str]
    data_hash_now: str | None  # data/raw as dvc.lock records it now (before any retraining)
    data_hash_champion: str | None  # data/raw the champion was trained on
    champion_version: str | None
    stale: dict[str, list[str]] = field(default_factory=dict)
    external_changed: list[str] = field(default_factory=list)  # folders DVC cannot see that changed

    @property
    def summary(self) -> str:
        if self.changed:
            return "retraining: " + "; ".join(self.reasons)
        return "nothing to train: " + "; ".join(self.reasons)

    @property
    def stage_to_force(self) -> str | None:
        """The stage the pipeline must run even if DVC calls it up to date, so that a change always ends in
        a gated model: DVC cannot see folders outside the repository, so their change forces ingest (and
        DVC takes it from there); data that differs from the champion's while every stage is up to date
        (versions lost, another dvc.lock checked out) reruns register. None: DVC's staleness suffices."""
        if self.external_changed and "ingest" not in self.stale:
            return "ingest"
        if not self.stale and not self.external_changed:
            return "register"
        return None


def recorded_fingerprint(root: Path, domain: str) -> str | None:
    return read_json_or_empty(Paths.at(root).raw / f"{domain}.json").get("source_fingerprint")


def check_for_changes(root: Path, params: Params, champion: dict | None, challenger: dict | None = None) -> ChangeCheck:
    """Whether a retraining run has anything to do, and why (see the module docstring).

    `challenger` is the latest registered version. When it was trained on today's data and not
    promoted, training again would only repeat it (training is deterministic), so that is "nothing
    changed" too; otherwise every scheduled run after a rejected challenger would retrain."""
    root = Path(root)
    stale = stale_stages(root)
    now = locked_hash(root, "ingest", "data/raw")
    trained_on = champion["tags"].get("graft.data_hash") if champion else None
    reasons = []
    if stale:
        reasons.append("DVC reports stale stages: " + ", ".join(f"{name} ({'; '.join(why[:2])})"
                                                                 for name, why in stale.items()))
    external = [f"{domain} folder {folder}" for domain, folder in external_folders(params, root).items()
                if folder_fingerprint(folder) != recorded_fingerprint(root, domain)]
    if external:
        reasons.append("new or changed files in " + ", ".join(external))
    already = challenger if challenger and now and challenger["tags"].get("graft.data_hash") == now else None
    if champion is None and already is None:
        reasons.append(f"no champion registered for {params.tracking.model_name} yet")
    elif champion is not None and now and trained_on != now and already is None:
        reasons.append(f"the raw data ({now}) differs from the data champion v{champion['version']} "
                       f"was trained on ({trained_on or 'unknown'})")
    changed = bool(reasons)
    if not changed and already is not None and already["version"] != (champion or {}).get("version"):
        gate = already["tags"].get("graft.gate.reason", "not promoted")
        reasons.append(f"the raw data ({now}) was already trained into v{already['version']}, which the gate did "
                       f"not promote ({gate}); DVC reports every stage up to date")
    elif not changed:
        reasons.append(f"the raw data ({now}) is what champion v{champion['version']} was trained on, "
                       "and DVC reports every stage up to date")
    return ChangeCheck(changed=changed, reasons=reasons, data_hash_now=now, data_hash_champion=trained_on,
                       champion_version=champion["version"] if champion else None, stale=stale,
                       external_changed=external)


@dataclass
class Outcome:
    """What one retraining run did; sent to the webhook as JSON and rendered as the report."""
    status: str  # "skipped" (nothing changed), "trained" or "failed"
    reason: str
    data_hash_before: str | None  # data/raw in dvc.lock when the run started
    data_hash_after: str | None  # ... and when it ended
    data_hash_champion: str | None  # the data the champion (at the start) was trained on
    champion_before: str | None
    champion_after: str | None
    version: str | None = None  # the version this run registered
    promoted: bool = False
    gate: str | None = None  # the promotion gate's reason
    failed_stage: str | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)
    finished_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_json(self) -> dict:
        return asdict(self)


def trained_outcome(check: ChangeCheck, root: Path, statuses: dict[str, dict], champion_after: dict | None) -> Outcome:
    """The outcome of a pipeline run that finished: what register decided, and the headline metrics."""
    from graft.summary import key_metrics

    paths = Paths.at(root)
    decision = read_json_or_empty(paths.metric("register"))
    ran_register = statuses.get("register", {}).get("status") == "ran"
    return Outcome(
        status="trained", reason=check.summary,
        data_hash_before=check.data_hash_now, data_hash_after=locked_hash(root, "ingest", "data/raw"),
        data_hash_champion=check.data_hash_champion, champion_before=check.champion_version,
        champion_after=champion_after["version"] if champion_after else None,
        version=str(decision.get("version")) if ran_register and decision.get("version") else None,
        promoted=bool(ran_register and decision.get("promote")),
        gate=decision.get("reason") if ran_register else "register did not run: nothing it depends on changed",
        metrics=key_metrics(paths), stages={name: s["status"] for name, s in statuses.items()})


def failed_outcome(check: ChangeCheck | None, root: Path, statuses: dict[str, dict], error: BaseException,
                   champion_after: dict | None) -> Outcome:
    """A run that failed: in the check (check is None: busy workspace, unreachable store) or in a stage."""
    failed = next((name for name, s in statuses.items() if s["status"] in ("failed", "not recorded")), None)
    return Outcome(
        status="failed", reason=check.summary if check else "the change check could not run",
        data_hash_before=check.data_hash_now if check else None,
        data_hash_after=locked_hash(root, "ingest", "data/raw"),
        data_hash_champion=check.data_hash_champion if check else None,
        champion_before=check.champion_version if check else None,
        champion_after=champion_after["version"] if champion_after else None,
        failed_stage=failed, error=f"{type(error).__name__}: {str(error)[:500]}",
        stages={name: s["status"] for name, s in statuses.items()})


def skipped_outcome(check: ChangeCheck) -> Outcome:
    return Outcome(status="skipped", reason=check.summary, data_hash_before=check.data_hash_now,
                   data_hash_after=check.data_hash_now, data_hash_champion=check.data_hash_champion,
                   champion_before=check.champion_version,
                   champion_after=check.champion_version)


def report_markdown(outcome: Outcome, model_name: str) -> str:
    """The short report a retraining run publishes (a Prefect artifact)."""
    title = {"skipped": "nothing to train", "trained": "retrained", "failed": "FAILED"}[outcome.status]
    lines = [f"# graft retraining: {title}", "", f"**Why:** {outcome.reason}", "",
             "| | before | after |", "|---|---|---|",
             f"| data/raw hash | `{outcome.data_hash_before or 'none'}` | `{outcome.data_hash_after or 'none'}` |",
             f"| {model_name} champion | {_v(outcome.champion_before)} | {_v(outcome.champion_after)} |", "",
             f"The champion at the start was trained on data/raw `{outcome.data_hash_champion or 'none'}`.", ""]
    if outcome.status == "trained":
        verdict = "promoted to champion" if outcome.promoted else "not promoted"
        lines += [f"**Registered:** {_v(outcome.version)}, {verdict}: {outcome.gate}", ""]
    if outcome.status == "failed":
        lines += [f"**Failed in:** {f'`{outcome.failed_stage}`' if outcome.failed_stage else 'before any stage ran'}", "",
                  f"```\n{outcome.error}\n```", "",
                  ("The champion was left where it was. Fix the cause, then run `graft retrain` "
                   "(or wait for the next scheduled run)."), ""]
    if outcome.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in outcome.metrics.items()]
        lines.append("")
    if outcome.stages:
        lines.append("Stages: " + ", ".join(f"{name} {status}" for name, status in outcome.stages.items()))
    return "\n".join(lines).rstrip() + "\n"


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def webhook_url(params: Params) -> str | None:
    """The configured webhook: a URL, or `env:NAME` to keep a token-bearing URL out of git and MLflow."""
    value = params.retrain.webhook
    if not value:
        return None
    if value.startswith("env:"):
        return os.environ.get(value[4:]) or None
    return value


def notify(url: str | None, outcome: Outcome, model_name: str, timeout: float = 10.0) -> bool:
    """POST the outcome as JSON (plus a Markdown `text` for chat webhooks). Never raises: a notification
    that cannot be delivered must not turn a good retraining run into a failed one."""
    if not url:
        return False
    payload = {**outcome.to_json(), "model_name": model_name, "text": report_markdown(outcome, model_name)}
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "graft-retrain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return True
    except (urllib.error.URLError, OSError, ValueError) as e:
        warn(f"retrain: could not notify the webhook ({type(e).__name__}: {e}); the outcome is in the report")
        return False


def last_outcome(root: Path) -> dict:
    """The last retraining outcome in this workspace (written by flows/retrain.py; empty when none ran)."""
    return read_json_or_empty(Paths.at(root).state / "retrain.json")
