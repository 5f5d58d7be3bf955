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
              "transfer_gain": ev.get("transfer_gain"), "val_transfer_gain": ev.get("val_transfer_gain")}
    return {k: v for k, v in picked.items() if isinstance(v, (int, float))}


def pct(v) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "-"


def recipe_line(ft: dict) -> str:
    """`lp_ft (auto, best validation accuracy of 3: linear_probe 80.0%, lp_ft 92.0%, full 90.0%)`."""
    chosen = ft.get("chosen") or ft.get("strategy")
    if not chosen:
        return "-"
    candidates = ft.get("candidates") or {}
    if not candidates:
        return str(chosen)
    scores = ", ".join(f"{name} {pct(c.get('val_acc'))}" for name, c in candidates.items())
    return f"{chosen} (auto, best validation accuracy of {len(candidates)}: {scores})"


def backbone_row(pre: dict) -> tuple[str, str]:
    """Pretrained on the source: its accuracy there. Imported: which weights, and the size the backbone sees."""
    if "weights_sha256" not in pre:
        return "source accuracy (pretrained backbone)", pct(pre.get("source_test_acc"))
    size = pre.get("input_size")
    return "pretrained backbone", (f"imported {pre.get('weights')} (sha256 {pre['weights_sha256'][:12]})"
                                   + (f", sees {size}×{size} images" if size else ""))


def registered_model(candidate: str | None) -> str | None:
    """What register's `candidate` names, in words."""
    return {"scratch": "the from-scratch control", "finetuned": "the fine-tuned model"}.get(candidate or "")


def labels_line(ft: dict) -> str:
    """Validation images are labels too: the total a user had to provide, said plainly."""
    train, val = ft.get("train_labels"), ft.get("val_labels")
    if not isinstance(train, int) or not isinstance(val, int):
        return "-"
    line = f"{train + val} ({train} to train, {val} to validate: choose the recipe, the model and when to stop)"
    if val > train:
        line += "; the validation set is larger than the training budget"
    return line


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
    pre, ft, ev, reg = (read_json_or_empty(paths.metric(n)) for n in ("pretrain", "finetune", "evaluate", "register"))

    rows = [
        backbone_row(pre),
        ("fine-tuning recipe", recipe_line(ft)),
        ("target accuracy, fine-tuned", pct(ev.get("test_acc"))),
        ("target accuracy, from scratch", pct(ev.get("baseline_test_acc"))),
        ("transfer gain", f"{ev['transfer_gain']:+.1f} points (test)" if "transfer_gain" in ev else "-"),
        ("labels used", labels_line(ft)),
        ("verdict (validation)", ev.get("verdict", "-")),
    ]
    if reg:
        aliases = ", ".join(reg.get("aliases", [])) or "no alias"
        which = registered_model(reg.get("candidate"))
        rows.append(("registered model", f"{reg.get('model_name')} v{reg.get('version')} ({aliases})"
                                         + (f", {which}" if which else "")))
        rows.append(("promotion", reg.get("reason", "-")))
    width = max(len(r[0]) for r in rows)
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
