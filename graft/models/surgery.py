"""Grafting operations that work through the classifier seam, for every backbone alike."""

from __future__ import annotations

import torch
from torch import nn

from graft.models.classifier import GraftClassifier
from graft.models.heads import HeadSpec


def replace_head(model: GraftClassifier, num_classes: int, head: HeadSpec, seed: int) -> GraftClassifier:
    """A fresh head for `num_classes`, initialised from `seed`; the backbone is untouched."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model.reset_classifier(num_classes, head)
    finally:
        torch.random.set_rng_state(state)
    return model


def set_backbone_trainable(model: GraftClassifier, trainable: bool) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(trainable)


def apply_bn_policy(model: GraftClassifier, train_bn: bool) -> None:
    """After model.train(): frozen BatchNorm layers go back to eval mode unless train_bn.

    Without this, a frozen backbone's running statistics still drift towards the target data.
    """
    if train_bn:
        return
    for m in model.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
