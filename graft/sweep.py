"""Sweeps: a grid of parameter variants, each run through the whole pipeline in its own workspace.

`-S finetune.lr=1e-3,3e-4 -S finetune.strategy=full,gradual_unfreeze` is a 2×2 grid. Every variant
is validated before anything is written. Each variant gets a workspace of its own under
`.graft/sweeps/<sweep_id>/<n>/`: a git worktree of this repository's HEAD with the working tree's
changes copied over (so lineage tags name the real commit and dirty flag), its own params.yaml and
dvc.lock, and DVC's cache pointed at this repository's cache. Sharing the cache shares DVC's run
cache: a stage whose inputs (deps and params) match one that already ran, in any workspace, is
restored from it rather than rerun. Two variants reaching such a stage at once are serialised by a
lock per stage input fingerprint (graft.walk.stage_slot), so it runs once and the other restores it.

No Prefect here; flows/sweep.py wires these steps.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graft.config import ConfigError, apply_overrides, parse_override, select
from graft.errors import GraftError
from graft.files import read_json_or_empty, write_json
from graft.paths import Paths
from graft.walk import Plan

SWEEPS = Path(".graft") / "sweeps"
SELECTION_METRIC = "finetune val_acc"  # chosen on validation data; test accuracy is only reported


class SweepError(GraftError):
    """The sweep cannot start or finish; the message says why and what to do."""


# ---------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Variant:
    number: int
    settings: tuple[tuple[str, Any], ...]  # (dotted key, value as graft validated it), in -S order

    @property
    def name(self) -> str:
        """`strategy=full,lr=0.001`: last key segments, unless two swept keys share one."""
        last = [k.split(".")[-1] for k, _ in self.settings]
        return ",".join(f"{k.split('.')[-1] if last.count(k.split('.')[-1]) == 1 else k}={_show(v)}"
                        for k, v in self.settings)

    @property
    def overrides(self) -> list[str]:
        """`-S` strings that re-parse to exactly these values (1e-3 would be a string to YAML 1.1)."""
        return [f"{k}={_yaml_value(v)}" for k, v in self.settings]


def variant_plan(variant_name: str, sweep_run_id: str, lock_dir: Path) -> Plan:
    """How the pipeline walks one variant: it stops before register (only the best is registered, on
    request), takes turns with the other variants per stage and input fingerprint (so identical stages run
    once and are restored from DVC's run cache elsewhere), and nests its MLflow run under the sweep's."""
    return Plan(skip=("register",), lock_dir=str(lock_dir), run_name=variant_name,
                tags={"mlflow.parentRunId": sweep_run_id, "graft.variant": variant_name})


def _show(value: Any) -> str:
    return _yaml_value(value) if isinstance(value, (dict, list)) else str(value)


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("...").strip()


def split_values(text: str) -> list[str]:
    """`1e-3,3e-4` -> ["1e-3", "3e-4"]; commas inside [...] or {...} belong to one value."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current)
    return [v.strip() for v in values]


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """`-S key=v1,v2` flags -> {key: [v1, v2]}, in the order given."""
    if not specs:
        raise SweepError("a sweep needs at least one -S KEY=V1,V2 (e.g. -S finetune.lr=0.001,0.0003)")
    grid: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"sweep -S {spec!r}: expected KEY=V1,V2,..., e.g. finetune.lr=0.001,0.0003")
        key, values = spec.split("=", 1)
        key = key.strip()
        if key in grid:
            raise SweepError(f"sweep -S {key}: given twice; list every value in one -S {key}=V1,V2")
        grid[key] = split_values(values)
        if any(v == "" for v in grid[key]):
            raise SweepError(f"sweep -S {spec!r}: an empty value; separate values with single commas")
    return grid


def plan(root: Path, specs: list[str]) -> list[Variant]:
    """Every variant of the grid, each validated against params.yaml; nothing is written.

    A bad key or value raises ConfigError naming the variant, the key, the value and what is allowed.
    """
    grid = parse_grid(specs)
    params_file = Paths.at(root).params
    variants = []
    for number, combo in enumerate(itertools.product(*grid.values()), start=1):
        raw = [f"{k}={v}" for k, v in zip(grid, combo)]
        try:
            validated = apply_overrides(params_file, raw, write=False).model_dump(mode="json")
        except ConfigError as e:
            raise ConfigError(f"sweep variant {', '.join(raw)}: {e}") from None
        settings = tuple((k, select(validated, parse_override(r)[0])) for k, r in zip(grid, raw))
        variants.append(Variant(number, settings))
    seen: dict[tuple, int] = {}
    for v in variants:
        key = tuple((k, repr(val)) for k, val in v.settings)
        if key in seen:
            raise SweepError(f"sweep variants {seen[key]} and {v.number} are the same ({v.name}); "
                             f"list each value once")
        seen[key] = v.number
    return variants


def threads_per_variant(configured: int, workers: int) -> int:
    """torch threads for each variant: the cores shared out between concurrent variants, never
    more than params.yaml asks for (0 there means torch's default, all cores)."""
    share = max(1, (os.cpu_count() or 1) // workers)
    return min(configured, share) if configured else share


# ---------------------------------------------------------------- workspaces

def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


def sweep_dir(root: Path, sweep_id: str) -> Path:
    return Paths.at(root).root / SWEEPS / sweep_id


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SweepError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()[:500]}")
    return proc.stdout


def _link_or_copy(src: str, dst: str) -> None:
    # Hard links: user images and weights can be large, and nothing writes into them in place.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# Git-ignored inputs that stages read: the user's images and weight files (DVC deps).
UNTRACKED_INPUTS = ("data/sources", "data/weights")


def create_workspace(root: Path, dest: Path, variant: Variant, threads: int) -> Path:
    """A worktree of HEAD plus the working tree's changes, the variant's params and the shared DVC cache.

    `threads` (torch threads) goes into the variant's params.yaml like its own overrides: results
    depend on the thread count, so dvc.lock, MLflow and `graft reproduce` must see the one it ran with.
    """
    from graft.dvc import cache_dir

    root = Paths.at(root).root
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, check=False).returncode:
        raise SweepError(f"{root} has no git commit yet; a sweep checks HEAD out into each workspace, so commit first")
    _git(root, "worktree", "add", "--detach", "--quiet", str(dest), "HEAD")
    # The working tree as it is now, uncommitted edits included (as `graft run` would use it).
    for rel in _git(root, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0"):
        if rel and rel != "dvc.lock" and (root / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel)
    for rel in _git(root, "ls-files", "--deleted", "-z").split("\0"):
        if rel:
            (dest / rel).unlink(missing_ok=True)
    (dest / "dvc.lock").unlink(missing_ok=True)  # each variant's own record starts empty
    for rel in UNTRACKED_INPUTS:
        if (root / rel).is_dir():
            shutil.copytree(root / rel, dest / rel, copy_function=_link_or_copy, dirs_exist_ok=True)
    (dest / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache_dir(root)}\n")
    swept = {k for k, _ in variant.settings}
    extra = [] if swept & {"train", "train.threads"} else [f"train.threads={threads}"]
    apply_overrides(dest / "params.yaml", [*variant.overrides, *extra])
    return dest


def remove_workspace(root: Path, workspace: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(workspace)], cwd=root, capture_output=True, check=False)
    shutil.rmtree(workspace, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True, check=False)


def clean_up(root: Path, directory: Path, results: list[dict], keep_workspaces: bool) -> None:
    """Remove finished variants' workspaces (their outputs are in the DVC cache, their numbers in
    MLflow); a failed variant's stays for inspection."""
    shutil.rmtree(directory / "locks", ignore_errors=True)
    for r in results:
        if not keep_workspaces and "error" not in r:
            remove_workspace(root, Path(r["workspace"]))


# ---------------------------------------------------------------- a remote Dask cluster

def check_cluster_ready(root: Path, prefect_api_url: str | None, address: str) -> None:
    """Refuse, naming every missing piece, unless a remote cluster's workers can reach what a
    variant needs: the Prefect API, the tracking server and a DVC remote (a temporary Prefect
    server, a sqlite store or a cache on this machine are out of their reach)."""
    from graft import tracking
    from graft.dvc import default_remote
    from graft.health import why_unreachable

    problems = []
    if not prefect_api_url:
        problems.append("no Prefect API: set PREFECT_API_URL to a Prefect server the workers can reach "
                        "(without it graft starts a temporary server on this machine only)")
    elif reason := why_unreachable(prefect_api_url):
        problems.append(f"the Prefect API {prefect_api_url} does not answer ({reason})")
    uri = tracking.tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        problems.append(f"the tracking store {uri} is on this machine: set MLFLOW_TRACKING_URI to an MLflow server "
                        f"the workers can reach")
    elif reason := why_unreachable(uri):
        problems.append(f"the MLflow server {uri} does not answer ({reason})")
    if not default_remote(root):
        problems.append("no default DVC remote: add one (dvc remote add -d NAME URL) so the workers can share "
                        "data, models and the run cache")
    if problems:
        raise SweepError(f"cannot sweep on the Dask cluster at {address}:\n  " + "\n  ".join(problems))


def check_workers_see(address: str, root: Path) -> None:
    """Each variant's workspace is a folder of this repository, so the workers must share its filesystem."""
    import distributed

    try:
        with distributed.Client(address, timeout=10) as client:
            seen = client.run(os.path.isdir, str(Paths.at(root).root))
    except OSError as e:
        raise SweepError(f"cannot connect to the Dask scheduler at {address}: {e}") from None
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if not seen or blind:
        raise SweepError(f"Dask workers {', '.join(blind) or '(none)'} at {address} cannot see {root}; the sweep's "
                         f"workspaces live in the repository, so run the workers where it is mounted at that path")


# ---------------------------------------------------------------- results

def variant_result(workspace: Path, variant: Variant, statuses: dict[str, dict], seconds: float) -> dict:
    """What the table needs from one finished variant, read back from its metrics files."""
    paths = Paths.at(workspace)
    finetune, evaluate = read_json_or_empty(paths.metric("finetune")), read_json_or_empty(paths.metric("evaluate"))
    return {"number": variant.number, "name": variant.name, "overrides": variant.overrides,
            "workspace": str(paths.root), "seconds": round(seconds, 1),
            "ran": [s for s, v in statuses.items() if v["status"] == "ran"],
            "restored": [s for s, v in statuses.items() if v["status"] == "restored"],
            "val_acc": finetune.get("val_acc"), "test_acc": evaluate.get("test_acc"),
            "baseline_test_acc": evaluate.get("baseline_test_acc"), "transfer_gain": evaluate.get("transfer_gain")}


def failed_result(workspace: Path, variant: Variant, error: str) -> dict:
    return {"number": variant.number, "name": variant.name, "overrides": variant.overrides,
            "workspace": str(workspace), "error": error}


def best(results: list[dict]) -> dict | None:
    """The variant with the highest validation accuracy (ties: the earlier variant)."""
    finished = [r for r in results if r.get("val_acc") is not None]
    return max(finished, key=lambda r: (r["val_acc"], -r["number"])) if finished else None


def format_table(results: list[dict], top: dict | None) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    columns = ["#", "variant", "val_acc", "test_acc", "baseline", "gain", "time", "ran here"]
    rows = []
    for r in sorted(results, key=lambda r: r["number"]):
        mark = "*" if top is not None and r["number"] == top["number"] else " "
        if "error" in r:
            rows.append([f"{r['number']}{mark}", r["name"], "failed", "-", "-", "-", "-", r["error"][:60]])
            continue
        gain = "-" if r["transfer_gain"] is None else f"{r['transfer_gain']:+.1f}"
        rows.append([f"{r['number']}{mark}", r["name"], pct(r["val_acc"]), pct(r["test_acc"]),
                     pct(r["baseline_test_acc"]), gain, f"{r['seconds']:.0f}s", ", ".join(r["ran"]) or "-"])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [columns, *rows]]
    if top is not None:
        lines.append(f"\n* best by validation accuracy ({SELECTION_METRIC}): {top['name']}; test accuracy is "
                     f"shown for information and was not used to choose")
    return "\n".join(lines)


def comparison_png(results: list[dict], top: dict | None, out: Path) -> Path:
    from graft import plots

    done = sorted((r for r in results if "error" not in r), key=lambda r: r["number"])
    best_mark = {top["number"]: " (best by val_acc)"} if top else {}
    labels = [f"{r['number']}{best_mark.get(r['number'], '')}\n{r['name'].replace(',', chr(10))}" for r in done]
    series = {m: [r.get(m) or 0.0 for r in done] for m in ("val_acc", "test_acc", "baseline_test_acc")}
    return plots.comparison(labels, series, out, "sweep: validation and test accuracy per variant")


def save_summary(directory: Path, results: list[dict], table: str) -> None:
    write_json(directory / "results.json", results)
    (directory / "table.txt").write_text(table + "\n")
