"""Pictures for people: learning curves, the confusion matrix, run comparisons (PNG, matplotlib Agg)."""

from __future__ import annotations

import csv
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def read_history(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def learning_curves(histories: dict[str, list[dict]], out: Path) -> Path:
    """Loss and accuracy per epoch for each training stage, one figure."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, rows), colour in zip(histories.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        validated = [r for r in rows if "val_loss" in r]  # every epoch, unless validate_every > 1
        val_epochs = [r["epoch"] for r in validated]
        marker = "o" if len(validated) < len(rows) else None
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], color=colour, linestyle="--", label=f"{name} train")
        ax_loss.plot(val_epochs, [r["val_loss"] for r in validated], color=colour, marker=marker, label=f"{name} val")
        ax_acc.plot(epochs, [r["train_acc"] for r in rows], color=colour, linestyle="--", label=f"{name} train")
        ax_acc.plot(val_epochs, [r["val_acc"] for r in validated], color=colour, marker=marker, label=f"{name} val")
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(fontsize=8, loc="lower right")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, out)


def confusion(matrix, classes: list[str], out: Path, title: str = "confusion matrix (test)") -> Path:
    plt = _pyplot()
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="actual")
    ax.set_title(title, fontsize=10)
    peak = max(1, int(matrix.max()))
    for i in range(len(classes)):
        for j in range(len(classes)):
            value = int(matrix[i][j])
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    return _save(fig, out)


def comparison(labels: list[str], series: dict[str, list[float]], out: Path, title: str) -> Path:
    """Grouped bars: one group per run, one bar per metric."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(labels) + 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (metric, values) in enumerate(series.items()):
        xs = [i + k * width for i in range(len(labels))]
        bars = ax.bar(xs, values, width, label=metric)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set(title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out
