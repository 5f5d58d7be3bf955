"""The end-of-run summary: what ran, and the numbers that matter, read back from metrics/ (no torch)."""

from __future__ import annotations


from graft.files import read_json_or_empty, write_json
from graft.paths import Paths


def save_stage_statuses(paths: Paths, statuses: dict[str, dict]) -> None:
    write_json(paths.state / "last_run.json", statuses)


def key_metrics(paths: Paths) -> dict[str, float]:
    """The headline numbers of the last run (logged on the parent MLflow run too)."""
    pre, ev = read_json_or_empty(paths.metric("pretrain")), read_json_or_empty(paths.metric("evaluate"))
    picked = {"source_test_acc": pre.get("source_test_acc"), "test_acc": ev.get("test_acc"),
              "test_macro_f1": ev.get("test_macro_f1"), "baseline_test_acc": ev.get("baseline_test_acc"),
              "transfer_gain": ev.get("transfer_gain")}
    return {k: v for k, v in picked.items() if isinstance(v, (int, float))}


def render(paths: Paths, statuses: dict[str, dict] | None = None) -> str:
    """A plain-text table: each stage (ran / up to date, time), then the key metrics and the registered model."""
    statuses = statuses if statuses is not None else read_json_or_empty(paths.state / "last_run.json")
    lines = []
    if statuses:
        lines.append(f"{'stage':<14}{'status':<14}{'time':>9}")
        for name, s in statuses.items():
            seconds = f"{s['seconds']:.1f}s" if s.get("seconds") is not None else "-"
            lines.append(f"{name:<14}{s.get('status', '?'):<14}{seconds:>9}")
        lines.append("")
    pre, ev, reg = (read_json_or_empty(paths.metric(n)) for n in ("pretrain", "evaluate", "register"))

    def pct(v):
        return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "-"

    rows = [
        ("source accuracy (pretrained backbone)", pct(pre.get("source_test_acc"))),
        ("target accuracy, fine-tuned", pct(ev.get("test_acc"))),
        ("target accuracy, from scratch", pct(ev.get("baseline_test_acc"))),
        ("transfer gain", f"{ev['transfer_gain']:+.1f} points" if "transfer_gain" in ev else "-"),
    ]
    if reg:
        aliases = ", ".join(reg.get("aliases", [])) or "no alias"
        rows.append(("registered model", f"{reg.get('model_name')} v{reg.get('version')} ({aliases})"))
        rows.append(("promotion", reg.get("reason", "-")))
    width = max(len(r[0]) for r in rows)
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
