"""Fine-tuning strategies as phases, and discriminative (layer-wise) learning rates.

A strategy is a list of phases; each phase says whether the backbone trains and scales the peak
rate. Which phase an epoch is in follows from the epoch number alone, so a resumed run puts the
model in the right freeze state without remembering how it got there, and never re-freezes what
was already unfrozen.

The optimizer always holds every parameter, in one group per layer group (head, then the backbone
from its last stage down to the stem) and per weight-decay class. Frozen parameters get no
gradient, so the optimizer skips them; unfreezing only flips requires_grad, and the optimizer's
groups, and so its checkpointed state, are the same in every phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from graft.models.classifier import GraftClassifier
from graft.models.surgery import set_backbone_trainable

STRATEGIES = ("full", "linear_probe", "gradual_unfreeze")


@dataclass(frozen=True)
class Phase:
    """index: 0 for the first phase. epochs: how many epochs it lasts. train_backbone: False freezes it.
    lr_scale: multiplies the peak learning rate in this phase."""

    index: int
    epochs: int
    train_backbone: bool
    lr_scale: float = 1.0


def plan_phases(strategy: str, epochs: int, freeze_epochs: int = 1, unfrozen_lr_factor: float = 0.5) -> list[Phase]:
    if strategy == "full":
        return [Phase(0, epochs, True)]
    if strategy == "linear_probe":
        return [Phase(0, epochs, False)]
    if strategy == "gradual_unfreeze":
        if not 1 <= freeze_epochs < epochs:
            raise ValueError(f"finetune.freeze_epochs ({freeze_epochs}) must be in 1..epochs-1 ({epochs - 1}) "
                             f"for gradual_unfreeze")
        # fastai's fine_tune: head alone at lr, then everything at lr/2 (discriminative below that).
        return [Phase(0, freeze_epochs, False), Phase(1, epochs - freeze_epochs, True, unfrozen_lr_factor)]
    raise ValueError(f"unknown finetune.strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def phase_of(phases: list[Phase], epoch: int) -> tuple[Phase, int]:
    """The phase that 1-based `epoch` falls in, and how many epochs of that phase came before it."""
    start = 1
    for phase in phases:
        if epoch < start + phase.epochs:
            return phase, epoch - start
        start += phase.epochs
    raise ValueError(f"epoch {epoch} is past the last phase ({start - 1} epochs in all)")


def apply_phase(model: GraftClassifier, phase: Phase) -> None:
    set_backbone_trainable(model, phase.train_backbone)
    for p in model.head.parameters():
        p.requires_grad_(True)


def layer_groups(model: GraftClassifier) -> list[tuple[str, nn.Module]]:
    """(name, module) from the head down to the stem: head, layer<n-1>, ..., layer0."""
    backbone = model.backbone.layer_groups()
    groups = [("head", model.head)] + [(f"layer{i}", g) for i, g in reversed(list(enumerate(backbone)))]
    covered = {id(p) for _, g in groups for p in g.parameters()}
    stray = [n for n, p in model.named_parameters() if id(p) not in covered]
    if stray:
        raise ValueError(f"parameters in no layer group: {stray[:5]}; the backbone's layer_groups() must cover all")
    return groups


def parameter_groups(model: GraftClassifier, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Optimizer groups: per layer group, its weights (decayed) and its norms and biases (not decayed:
    decaying them only hurts, as timm and fastai found). `lr_mult` falls by `layer_decay` per group
    below the head; the loop sets each group's lr to peak × phase scale × lr_mult × schedule."""
    out = []
    for depth, (name, module) in enumerate(layer_groups(model)):
        decay, no_decay = [], []
        for pname, p in module.named_parameters():
            (no_decay if p.ndim <= 1 or pname.endswith(".bias") else decay).append(p)
        mult = layer_decay ** depth
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, "_no_decay")):
            if params:
                out.append({"params": params, "weight_decay": wd, "lr": 0.0, "lr_mult": mult,
                            "name": name + suffix, "layer": name})
    return out


def make_optimizer(model: GraftClassifier, optimizer: str, weight_decay: float, momentum: float,
                   layer_decay: float = 1.0) -> torch.optim.Optimizer:
    groups = parameter_groups(model, weight_decay, layer_decay)
    # Fused kernels (CPU and CUDA): one call per group instead of a chain of foreach ops. With a group
    # per layer group and decay class (10 for the tiny CNN) the AdamW step fell from 446 to 218 µs on
    # 2 CPU cores, about 2 % of a training step (BENCHMARKS.md).
    if optimizer == "sgd":
        # Nesterov needs momentum > 0; with momentum 0 this is plain SGD.
        return torch.optim.SGD(groups, lr=0.0, momentum=momentum, nesterov=momentum > 0, fused=True)
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, fused=True)
    raise ValueError(f"unknown optimizer {optimizer!r}; allowed: adamw, sgd")


def group_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current rate of each layer group, 0 where the group is frozen (for the per-epoch row)."""
    rates: dict[str, float] = {}
    for g in optimizer.param_groups:
        trains = any(p.requires_grad for p in g["params"])
        rates.setdefault(f"lr_{g['layer']}", g["lr"] if trains else 0.0)
    return rates
