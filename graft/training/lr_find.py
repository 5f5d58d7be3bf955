"""`graft lr-find`: a learning-rate range test on the grafted model (fastai's lr_find is the reference).

The rate grows exponentially from start_lr to end_lr, one step per batch; the loss is smoothed
(exponential average, debiased) and the test stops once it exceeds 4× its minimum. It runs twice,
on copies in memory (no file changes), with finetune's optimizer, augmentation and layer-wise decay:
once training the head alone (a suggestion for finetune.lr), once training every layer at the swept
rate, as fastai's lr_find on an unfrozen learner (a suggestion for finetune.backbone_lr).

Suggestions, as fastai computes them: `valley` (the default: halfway down the longest descending
stretch of the curve), `steep` (the steepest descent) and `minimum` (the rate
at the lowest loss, divided by 10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from graft.config import Params
from graft.console import say
from graft.data.dataset import ImageDataset
from graft.models.classifier import GraftClassifier
from graft.models.surgery import apply_bn_policy
from graft.paths import Paths
from graft.seeding import generator
from graft.training.augment import make_augment
from graft.training.recipe import Recipe
from graft.training.strategies import apply_phase, make_optimizer, plan_phases

SMOOTHING = 0.98
DIVERGENCE = 4.0
VALLEY_TOLERANCE = 0.005


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]          # smoothed
    valley: float
    steep: float
    minimum: float
    diverged: bool

    @property
    def suggestion(self) -> float:
        return self.valley


def _batches(n: int, batch_size: int, seed: int):
    """Batch indices forever: a fresh shuffle per pass over the data."""
    epoch = 0
    while True:
        order = torch.randperm(n, generator=generator(seed, "lr_find", "shuffle", epoch))
        for i in range(0, n, batch_size):
            yield order[i:i + batch_size]
        epoch += 1


def range_test(model: GraftClassifier, train: ImageDataset, recipe: Recipe, *, seed: int, device: torch.device,
               start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100) -> LrFindResult:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_it < 10:
        raise ValueError(f"lr-find needs at least 10 iterations to suggest anything, got {num_it}")
    model.to(device)
    phase = plan_phases(recipe.strategy, recipe.epochs, recipe.freeze_epochs, recipe.unfrozen_lr_factor)[0]
    apply_phase(model, phase)
    model.train()
    apply_bn_policy(model, recipe.train_bn)
    optimizer = make_optimizer(model, recipe.optimizer, recipe.weight_decay, recipe.momentum, recipe.layer_decay)
    augment = make_augment(recipe.augment, train.images.shape[-1])
    torch.manual_seed(generator(seed, "lr_find", "draws").initial_seed())

    lrs, losses, best, avg, diverged = [], [], math.inf, 0.0, False
    batches = _batches(len(train), recipe.batch_size, seed)
    for i in range(num_it):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_it - 1))
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_mult"]
        idx = next(batches)
        x = train.images[idx]
        x = (augment(x) if augment is not None else x).to(device)
        loss = F.cross_entropy(model(x), train.labels[idx].to(device), label_smoothing=recipe.label_smoothing)
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss.item()
        smoothed = avg / (1 - SMOOTHING ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGENCE * best:
            diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
    # As fastai: the first tenth (still warming the average) and the last points (diverging) mislead.
    skip_end = 5 if len(lrs) > num_it // 10 + 10 else 0
    kept_lrs, kept = lrs[num_it // 10:len(lrs) - skip_end], losses[num_it // 10:len(losses) - skip_end]
    if len(kept) < 3:
        kept_lrs, kept = lrs, losses
    return LrFindResult(lrs, losses, valley(kept_lrs, kept), steep(kept_lrs, kept), minimum(kept_lrs, kept), diverged)


def minimum(lrs: list[float], losses: list[float]) -> float:
    return lrs[min(range(len(losses)), key=losses.__getitem__)] / 10


def steep(lrs: list[float], losses: list[float]) -> float:
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(lrs) - 1)]
    return lrs[min(range(len(slopes)), key=slopes.__getitem__)]


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley: the longest decreasing subsequence of the loss, then halfway along it.

    Unlike fastai, a step counts as decreasing only if it falls by 0.5% of the curve's range: on a
    small dataset every step sees the same images, the flat start of the curve falls by tiny
    amounts, and fastai's version would count that plateau as part of the valley."""
    n = len(losses)
    tolerance = VALLEY_TOLERANCE * (max(losses) - min(losses))
    run = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] - tolerance and run[i] < run[j] + 1:
                run[i] = run[j] + 1
            if run[end] < run[i]:
                end, start = i, i - run[i]
    third = (end - start) / 3
    return lrs[min(start + int(third) + int(third / 2), n - 1)]


def save_plot(result: LrFindResult, path: Path, title: str = "learning-rate range test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, color="black", linewidth=1.2)
    for name, value, colour in (("valley", result.valley, "tab:green"), ("steep", result.steep, "tab:orange"),
                                ("minimum/10", result.minimum, "tab:blue")):
        ax.axvline(value, color=colour, linestyle="--", linewidth=1, label=f"{name} {value:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def run(params: Params, paths: Paths, *, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
        out: Path | None = None) -> dict:
    """The range test on models/grafted.safetensors and the target's training set; saves the plot."""
    from graft.data.store import load_domain
    from graft.models.io import load_classifier
    from graft.training.runtime import setup_torch
    from graft.training.selection import candidate_strategies, finetune_recipe
    from graft.training.strategies import resolve_rates

    grafted = paths.model("grafted")
    if not grafted.exists():
        raise FileNotFoundError(f"{grafted}: missing; lr-find runs on the grafted model: run `graft run` first "
                                f"(or the stages up to replace_head)")
    device = setup_torch(params)
    data, _ = load_domain(paths, "target")
    out = out or paths.state / "lr_find.png"  # beside graft's other state: not a DVC output, not for git
    fp = params.finetune
    # What each key is now, for the strategy it serves (auto: its first candidate that trains the backbone).
    trains_backbone = next((s for s in candidate_strategies(params) if s != "linear_probe"), "full")
    current = {"lr": resolve_rates("linear_probe", fp.lr, fp.backbone_lr)[0],
               "backbone_lr": resolve_rates(trains_backbone, fp.lr, fp.backbone_lr)[1]}
    found = {}
    for key, strategy, trains, plot in (("lr", "linear_probe", "the head alone", out),
                                        ("backbone_lr", "full", "every layer", out.with_name(f"{out.stem}_backbone.png"))):
        model, _ = load_classifier(grafted)
        recipe = finetune_recipe(params, strategy)
        result = range_test(model, data["train"], recipe, seed=params.seed, device=device, start_lr=start_lr,
                            end_lr=end_lr, num_it=num_it)
        save_plot(result, plot, f"learning-rate range test: {trains} (for finetune.{key})")
        say(f"lr-find: {len(result.lrs)} steps from {start_lr:g} to {result.lrs[-1]:.3g} training {trains} "
            f"({recipe.optimizer}){', stopped as the loss diverged' if result.diverged else ''}")
        say(f"lr-find: suggested finetune.{key} {result.suggestion:.2e} (valley); steep {result.steep:.2e}, "
            f"minimum/10 {result.minimum:.2e}; now {current[key]:g}; plot saved to {plot}")
        found[key] = {"suggestion": result.suggestion, "valley": result.valley, "steep": result.steep,
                      "minimum": result.minimum, "steps": len(result.lrs), "diverged": result.diverged,
                      "plot": str(plot)}
    return found
