"""Classification heads that sit on a backbone's pooled features.

The head is described by a plain dataclass so it can be written to a JSON sidecar next to
the weights and rebuilt exactly when the model is loaded again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

HEAD_KINDS = ("linear", "mlp")


@dataclass
class HeadSpec:
    """kind: "linear" (one Linear layer) or "mlp" (hidden layers, then a Linear to the classes).
    hidden: mlp hidden sizes, ignored for "linear".
    dropout: dropout probability before every Linear layer (0 disables it).
    batchnorm: BatchNorm1d before every Linear layer.
    """

    kind: str = "linear"
    hidden: list[int] = field(default_factory=lambda: [512])
    dropout: float = 0.0
    batchnorm: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadSpec":
        d = dict(d)
        if "hidden" in d:
            # JSON has no tuples; normalise so a round trip compares equal.
            d["hidden"] = [int(h) for h in d["hidden"]]
        return cls(**d)


def create_head(spec: HeadSpec, in_features: int, num_classes: int) -> nn.Module:
    """Build the head described by `spec`, mapping N×in_features to N×num_classes logits.

    The mlp follows fastai's create_head: each layer is [BatchNorm1d] [Dropout] Linear, with
    ReLU between layers but not after the last, so the output is raw logits.
    """
    if spec.kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {spec.kind!r}; allowed: {', '.join(HEAD_KINDS)}")
    if not 0.0 <= spec.dropout < 1.0:
        raise ValueError(f"head dropout must be in [0, 1), got {spec.dropout}")
    if in_features < 1 or num_classes < 1:
        raise ValueError(f"head needs in_features >= 1 and num_classes >= 1, got {in_features}, {num_classes}")
    hidden = list(spec.hidden) if spec.kind == "mlp" else []
    if any(h < 1 for h in hidden):
        raise ValueError(f"mlp hidden sizes must be >= 1, got {hidden}")

    if spec.kind == "linear" and not spec.batchnorm and spec.dropout == 0:
        # A bare Linear keeps `model.get_classifier().weight` working for the common case.
        return nn.Linear(in_features, num_classes)

    sizes = [in_features, *hidden, num_classes]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if spec.batchnorm:
            layers.append(nn.BatchNorm1d(n_in))
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
