"""Fine-tuning strategies as phases, and discriminative (layer-wise) learning rates.

A strategy is a list of phases; each phase says whether the backbone trains and scales the peak
rate. Which phase an epoch is in follows from the epoch number alone, so a resumed run puts the
model in the right freeze state without remembering how it got there, and never re-freezes what
was already unfrozen.

The head and the backbone have rates of their own: a new head starts from random weights and needs a
large rate, while a pretrained backbone is destroyed by one (the real-data tables in BENCHMARKS.md).
Each strategy has default rates for both parts (DEFAULT_RATES); params ask for them with `auto`.

lp_ft (LP-FT, Kumar et al. 2022) is not a phase plan but two runs of the loop: a linear probe, then
everything trained from the probe's weights at the backbone's rate with a fresh optimizer
(graft/training/selection.py), so `auto` can reuse its linear-probe candidate.

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

STRATEGIES = ("full", "linear_probe", "gradual_unfreeze")  # the phase plans one run of the loop can follow

# (head, backbone) peak rates per strategy, for AdamW. lp_ft's pair is the probe's head rate, then the one
# rate everything trains at once the backbone joins. BENCHMARKS.md ("Fine-tuning on three datasets") has the
# evidence, per dataset; none of these was chosen on one dataset alone.
DEFAULT_RATES: dict[str, tuple[float, float | None]] = {
    "linear_probe": (0.01, None),
    "lp_ft": (0.01, 0.001),
    "full": (0.01, 0.001),
    "gradual_unfreeze": (0.01, 0.001),
}


def resolve_rates(strategy: str, lr: float | str, backbone_lr: float | str) -> tuple[float, float]:
    """(head rate, backbone rate): the given ones, and the strategy's defaults where `auto`."""
    head_default, backbone_default = DEFAULT_RATES[strategy]
    head = head_default if lr == "auto" else float(lr)
    if backbone_lr != "auto":
        return head, float(backbone_lr)
    # A frozen backbone's rate is never used; keep it equal to the head's so the logged rates read plainly.
    return head, backbone_default if backbone_default is not None else head


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
    decaying them only hurts, as timm and fastai found). `part` is head or backbone; `lr_mult` is 1 for
    the head and the backbone's top group and falls by `layer_decay` per group below that. The loop sets
    each group's lr to its part's peak × phase scale × lr_mult × schedule."""
    out = []
    for depth, (name, module) in enumerate(layer_groups(model)):
        decay, no_decay = [], []
        for pname, p in module.named_parameters():
            (no_decay if p.ndim <= 1 or pname.endswith(".bias") else decay).append(p)
        part = "head" if depth == 0 else "backbone"
        mult = 1.0 if depth == 0 else layer_decay ** (depth - 1)
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, "_no_decay")):
            if params:
                out.append({"params": params, "weight_decay": wd, "lr": 0.0, "lr_mult": mult, "part": part,
                            "name": name + suffix, "layer": name})
    return out


def set_rates(optimizer: torch.optim.Optimizer, head_lr: float, backbone_lr: float, factor: float = 1.0) -> None:
    """Each group's rate: its part's peak × its layer-decay multiplier × the schedule's factor."""
    peaks = {"head": head_lr, "backbone": backbone_lr}
    for g in optimizer.param_groups:
        g["lr"] = peaks[g["part"]] * g["lr_mult"] * factor


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
