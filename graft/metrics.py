"""Classification metrics and the paired test used by the promotion gate (plain torch, no sklearn)."""

from __future__ import annotations

import math

import torch


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: actual class; columns: predicted class."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], bins: int = 15) -> dict:
    probs = logits.softmax(1)
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, len(classes)).double()
    tp = cm.diag()
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), torch.zeros_like(tp))
    return {
        "accuracy": (preds == labels).double().mean().item(),
        "macro_f1": f1.mean().item(),
        "ece": expected_calibration_error(probs, labels, bins),
        "per_class": {c: {"precision": precision[i].item(), "recall": recall[i].item(), "f1": f1[i].item(),
                          "support": int(cm[i].sum().item())} for i, c in enumerate(classes)},
    }


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence, preds = probs.max(1)
    correct = (preds == labels).double()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.double().mean().item() * abs(correct[in_bin].mean().item() - confidence[in_bin].double().mean().item())
    return ece


def mcnemar_one_sided(challenger_correct: torch.Tensor, champion_correct: torch.Tensor) -> dict:
    """Exact McNemar test that the challenger is better, on the same examples.

    Only discordant pairs count: b = challenger right where the champion is wrong, c = the reverse.
    Under "equally good", b ~ Binomial(b + c, 1/2); p = P(X >= b).
    """
    b = int((challenger_correct & ~champion_correct).sum())
    c = int((~challenger_correct & champion_correct).sum())
    n = b + c
    p = 1.0 if n == 0 else sum(math.comb(n, k) for k in range(b, n + 1)) / 2**n
    return {"challenger_only_correct": b, "champion_only_correct": c, "p_value": p}
