"""The one seam every model goes through: a backbone that makes features, a head that classifies.

Modelled on timm's contract (`forward_features`, `forward_head`, `get_classifier`,
`reset_classifier`), so head replacement never needs per-architecture special cases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graft.models.backbones import Backbone
from graft.models.heads import HeadSpec, create_head


class GraftClassifier(nn.Module):
    """Backbone + head. Takes raw uint8 images (or floats in [0, 1]) and normalises inside, so
    preprocessing travels with the weights. With `input_size`, images of any other side are
    resized to it first: published ImageNet weights see 224×224 while the data stays 32×32 in
    memory (and on disk), and a saved model accepts images of any size."""

    def __init__(self, backbone: Backbone, num_classes: int, head: HeadSpec | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 input_size: int | None = None) -> None:
        super().__init__()
        channels = backbone.in_channels
        self.backbone = backbone
        self.input_size = input_size
        self.head_spec = head or HeadSpec()
        self.num_classes = num_classes
        self.head = create_head(self.head_spec, backbone.feature_dim, num_classes)
        self.register_buffer("mean", torch.tensor(mean or [0.5] * channels).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(std or [0.25] * channels).view(1, channels, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        size = self.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, N×feature_dim."""
        return self.backbone(self.normalise(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, head: HeadSpec | None = None) -> None:
        """Replace the head with a freshly initialised one; the backbone is untouched."""
        self.head_spec = head or self.head_spec
        self.num_classes = num_classes
        self.head = create_head(self.head_spec, self.backbone.feature_dim, num_classes)

    def set_normalisation(self, mean: list[float], std: list[float]) -> None:
        self.mean.copy_(torch.tensor(mean).view_as(self.mean))
        self.std.copy_(torch.tensor(std).view_as(self.std))
