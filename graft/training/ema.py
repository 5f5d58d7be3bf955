"""An exponential moving average of the weights, kept outside the loop as timm's ModelEmaV2/V3 are (a copy of the
model, updated in place after each step; integer buffers copied, as V3 does). The decay's warm-up is not timm's
(ModelEmaV2 has none; V3's optional one is a power law): it is TensorFlow's tf.train.ExponentialMovingAverage
with num_updates, min(decay, (1 + t) / (10 + t))."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEma:
    """Keeps `module`, a copy of the model whose floating tensors (weights and BatchNorm statistics)
    follow the trained model's as ema = decay·ema + (1-decay)·current after every step.

    The decay warms up as min(decay, (1+t)/(10+t)): fine-tuning on a few labels may take only tens
    of steps, and a fixed 0.999 would leave the average at the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema, current in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema.dtype.is_floating_point:
                ema.lerp_(current, 1.0 - d)
            else:
                ema.copy_(current)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
