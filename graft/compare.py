"""`graft compare`: the last N pipeline runs side by side: the params that differ and the key metrics."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from graft import plots, tracking

KEY_METRICS = ("test_acc", "baseline_test_acc", "transfer_gain", "source_test_acc")


def compare_runs(root: Path, experiment: str, last: int) -> tuple[list[dict], list[str]]:
    """(runs newest first, the param keys whose values differ between them)."""
    runs = tracking.pipeline_runs(root, experiment, last)
    keys = sorted({k for r in runs for k in r["params"]})
    differing = [k for k in keys if len({r["params"].get(k) for r in runs}) > 1]
    return runs, differing


def _label(run: dict) -> str:
    return dt.datetime.fromtimestamp(run["start_ms"] / 1000).strftime("%m-%d %H:%M:%S")


def format_table(runs: list[dict], differing: list[str]) -> str:
    if not runs:
        return "no finished pipeline runs yet: run `graft run` first"
    columns = ["run", "started"] + differing + list(KEY_METRICS)
    rows = []
    for r in runs:
        values = [r["run_id"][:8], _label(r)] + [r["params"].get(k, "-") for k in differing]
        for m in KEY_METRICS:
            v = r["metrics"].get(m)
            values.append("-" if v is None else (f"{v:+.1f}" if m == "transfer_gain" else f"{v:.3f}"))
        rows.append([str(v) for v in values])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    if not differing and len(runs) > 1:
        out.append("(these runs used identical params)")
    return "\n".join(out)


def comparison_png(runs: list[dict], differing: list[str], out: Path) -> Path:
    labels = []
    for r in reversed(runs):  # oldest first, left to right
        diff = ", ".join(f"{k.split('.')[-1]}={r['params'].get(k)}" for k in differing[:2])
        labels.append(f"{r['run_id'][:6]}\n{diff}" if diff else r["run_id"][:6])
    series = {m: [r["metrics"].get(m, 0.0) for r in reversed(runs)] for m in ("test_acc", "baseline_test_acc")}
    return plots.comparison(labels, series, out, "fine-tuned vs from-scratch test accuracy per pipeline run")
