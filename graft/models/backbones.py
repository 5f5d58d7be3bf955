"""Feature extractors: a normalised N×C×H×W float batch in, pooled N×feature_dim features out.

Every backbone exposes `layer_groups()` so training can give each depth its own learning
rate without knowing the architecture. Torchvision models are always built with
`weights=None`: this module never downloads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class. Subclasses set `in_channels` and `feature_dim` and implement `forward`."""

    in_channels: int
    feature_dim: int

    def __init__(self, in_channels: int, feature_dim: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_groups(self) -> list[nn.Module]:
        """Ordered groups from stem to last stage; every parameter is in exactly one group.

        One group is always a valid answer; subclasses split finer so earlier layers can
        be trained more gently than later ones.
        """
        return [self]


BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str, factory: Callable[..., Backbone]) -> None:
    """Make `factory(in_channels=..., image_size=..., **kwargs)` available as `name`."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = factory


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def create_backbone(name: str, in_channels: int, image_size: int, **kwargs) -> Backbone:
    """Build backbone `name` for images of `in_channels` channels and side `image_size`.

    Extra kwargs go to the backbone's factory (e.g. `width` for tiny_cnn, `adapt_stem` for
    the torchvision architectures).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    return BACKBONES[name](in_channels=in_channels, image_size=image_size, **kwargs)


# Above this side length an input counts as ImageNet-like and keeps the published stems;
# at or below it, the published stems would shrink a 32×32 image to 1×1 before the last stage.
SMALL_INPUT_MAX = 64


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyCNN(Backbone):
    """Four conv3x3-BN-ReLU blocks (width, 2w, 4w, 4w channels); the first three halve the
    resolution, so 32×32 ends at 4×4. Fast enough on CPU for tests and small runs."""

    def __init__(self, in_channels: int, image_size: int, width: int = 32) -> None:
        if width < 1:
            raise ValueError(f"tiny_cnn width must be >= 1, got {width}")
        super().__init__(in_channels, feature_dim=4 * width)
        # Only the first conv runs at full resolution; strided convs after it, rather than
        # conv + maxpool in every block, nearly doubled training throughput on 2 CPU cores.
        # Larger inputs get a strided first conv as well, which quarters their cost.
        stem_stride = 1 if image_size <= SMALL_INPUT_MAX else 2
        self.blocks = nn.Sequential(
            nn.Sequential(_conv_bn_relu(in_channels, width, stem_stride), nn.MaxPool2d(2)),
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 4 * width, 2),
            _conv_bn_relu(4 * width, 4 * width, 1),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))

    def layer_groups(self) -> list[nn.Module]:
        return list(self.blocks)


register_backbone("tiny_cnn", TinyCNN)


# --- torchvision architectures -------------------------------------------------------------


def _remake_conv(conv: nn.Conv2d, in_channels: int, init: Callable[[nn.Conv2d], None],
                 kernel_size: int | None = None, stride: int | None = None,
                 padding: int | None = None) -> nn.Conv2d:
    """A fresh first conv like `conv` but with the given channel count / geometry."""
    new = nn.Conv2d(
        in_channels, conv.out_channels,
        kernel_size=conv.kernel_size if kernel_size is None else kernel_size,
        stride=conv.stride if stride is None else stride,
        padding=conv.padding if padding is None else padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    init(new)
    return new


# Each family's constructor initialises its convs its own way; a replaced stem should match.
def _kaiming_fan_out(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _trunc_normal(conv: nn.Conv2d) -> None:
    nn.init.trunc_normal_(conv.weight, std=0.02)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())


@dataclass(frozen=True)
class _Family:
    """How to operate on one torchvision family without per-architecture subclasses.

    get_stem / set_stem: the first conv (the only layer that sees the raw channels).
    adapt_small: (model, in_channels, image_size) -> None, rebuilds the stem for small inputs.
    strip_classifier: removes the ImageNet classifier in place, returns the feature size.
    parts: (stem modules, stage blocks in order, modules after the last block); the
        blocks are cut into layer groups wherever a block downsamples.
    """

    get_stem: Callable[[nn.Module], nn.Conv2d]
    set_stem: Callable[[nn.Module, nn.Conv2d], None]
    init: Callable[[nn.Conv2d], None]
    adapt_small: Callable[[nn.Module, int, int], None]
    strip_classifier: Callable[[nn.Module], int]
    parts: Callable[[nn.Module], tuple[list[nn.Module], list[nn.Module], list[nn.Module]]]


def _set_resnet_stem(m: nn.Module, conv: nn.Conv2d) -> None:
    m.conv1 = conv


def _adapt_resnet(m: nn.Module, in_channels: int, image_size: int) -> None:
    # The CIFAR-style ResNet stem: with 7×7/2 + maxpool, a 32×32 image is 1×1 at layer4.
    m.conv1 = _remake_conv(m.conv1, in_channels, _kaiming_fan_out, kernel_size=3, stride=1, padding=1)
    m.maxpool = nn.Identity()


def _strip_resnet(m: nn.Module) -> int:
    dim = m.fc.in_features
    m.fc = nn.Identity()
    return dim


def _set_features_stem(m: nn.Module, conv: nn.Conv2d) -> None:
    m.features[0][0] = conv


def _adapt_mobile(m: nn.Module, in_channels: int, image_size: int) -> None:
    # These nets reduce by 32; dropping the stem's stride leaves a 2×2 map at 32×32.
    m.features[0][0] = _remake_conv(m.features[0][0], in_channels, _kaiming_fan_out, stride=1)


def _strip_mobilenet_v3(m: nn.Module) -> int:
    # classifier = [Linear(pre-logits), Hardswish, Dropout, Linear(1000)]. The pre-logits
    # layer is the paper's final 1×1 conv after pooling and carries pretrained weights, so it
    # stays in the backbone (keys unchanged for loading); dropout is the head's business.
    m.classifier = m.classifier[:2]
    return m.classifier[0].out_features


def _strip_efficientnet(m: nn.Module) -> int:
    dim = m.classifier[-1].in_features
    m.classifier = nn.Identity()
    return dim


def _adapt_convnext(m: nn.Module, in_channels: int, image_size: int) -> None:
    # The 4×4/4 patchify stem plus three 2× downsamples would leave 1×1 at 32×32. Patch 2
    # leaves 2×2 (as the adapted mobile nets); patch 1 only below 32, where 2 would give
    # 1×1 again, because full-resolution ConvNeXt stages cost about 4× as much.
    patch = 1 if image_size < 32 else 2
    m.features[0][0] = _remake_conv(m.features[0][0], in_channels, _trunc_normal,
                                    kernel_size=patch, stride=patch, padding=0)


def _strip_convnext(m: nn.Module) -> int:
    # classifier = [LayerNorm2d, Flatten, Linear]; the norm is part of the published
    # feature path (and pretrained), only the Linear goes.
    dim = m.classifier[2].in_features
    m.classifier[2] = nn.Identity()
    return dim


_FAMILIES: dict[str, _Family] = {
    "resnet": _Family(
        get_stem=lambda m: m.conv1, set_stem=_set_resnet_stem, init=_kaiming_fan_out,
        adapt_small=_adapt_resnet, strip_classifier=_strip_resnet,
        parts=lambda m: ([m.conv1, m.bn1], [m.layer1, m.layer2, m.layer3, m.layer4], []),
    ),
    "mobilenet_v3": _Family(
        get_stem=lambda m: m.features[0][0], set_stem=_set_features_stem, init=_kaiming_fan_out,
        adapt_small=_adapt_mobile, strip_classifier=_strip_mobilenet_v3,
        parts=lambda m: ([m.features[0]], list(m.features[1:-1]), [m.features[-1], m.classifier]),
    ),
    "efficientnet": _Family(
        get_stem=lambda m: m.features[0][0], set_stem=_set_features_stem, init=_kaiming_fan_out,
        adapt_small=_adapt_mobile, strip_classifier=_strip_efficientnet,
        parts=lambda m: ([m.features[0]], list(m.features[1:-1]), [m.features[-1]]),
    ),
    "convnext": _Family(
        get_stem=lambda m: m.features[0][0], set_stem=_set_features_stem, init=_trunc_normal,
        adapt_small=_adapt_convnext, strip_classifier=_strip_convnext,
        parts=lambda m: ([m.features[0]], list(m.features[1:]), [m.classifier]),
    ),
}

# name -> family; the name is also the torchvision builder's name.
TORCHVISION_ARCHS: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "mobilenet_v3_small": "mobilenet_v3",
    "mobilenet_v3_large": "mobilenet_v3",
    "efficientnet_b0": "efficientnet",
    "convnext_tiny": "convnext",
}


class TorchvisionBackbone(Backbone):
    """A torchvision classifier with its ImageNet classifier removed.

    `self.model` keeps torchvision's module names, so published weights load with
    `backbone.model.load_state_dict(state, strict=False)` when `adapt_stem=False` (only the
    removed final Linear's keys are left over).

    adapt_stem=True: for image_size <= SMALL_INPUT_MAX the stem is made less aggressive,
    and for other channel counts the first conv is replaced; both reinitialise that conv.
    adapt_stem=False: the architecture stays exactly as published (in_channels must be 3).
    Other kwargs go to the torchvision builder (e.g. stochastic_depth_prob).
    """

    def __init__(self, arch: str, in_channels: int, image_size: int, adapt_stem: bool = True,
                 **kwargs) -> None:
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"unknown torchvision architecture {arch!r}; "
                             f"supported: {', '.join(sorted(TORCHVISION_ARCHS))}")
        if not adapt_stem and in_channels != 3:
            raise ValueError(f"{arch} with adapt_stem=False is the published architecture and "
                             f"takes 3 channels, got in_channels={in_channels}; use adapt_stem=True")
        family = _FAMILIES[TORCHVISION_ARCHS[arch]]
        # Imported here, not at the top: torchvision's import pulls in torch._dynamo (about 1.5 s), which a
        # tiny_cnn run, and every command that only reads a model's description, never needs.
        import torchvision.models

        try:
            model = getattr(torchvision.models, arch)(weights=None, **kwargs)
        except TypeError as e:  # e.g. tiny_cnn's `width`, left in model.backbone_args when switching backbone
            raise ValueError(f"model.backbone_args {kwargs} do not fit {arch} ({e}); the torchvision backbones take "
                             f"adapt_stem and their torchvision builder's arguments: remove the others, e.g. "
                             f"model.backbone_args: {{}}") from None
        if adapt_stem:
            if image_size <= SMALL_INPUT_MAX:
                family.adapt_small(model, in_channels, image_size)
            elif in_channels != family.get_stem(model).in_channels:
                family.set_stem(model, _remake_conv(family.get_stem(model), in_channels, family.init))
        feature_dim = family.strip_classifier(model)
        super().__init__(in_channels, feature_dim)
        self.arch = arch
        self.model = model
        self._family = family

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # With the classifier stripped, torchvision's own forward ends at pooled features.
        return self.model(x)

    def layer_groups(self) -> list[nn.Module]:
        """[stem, then one group per resolution stage]; what follows the last block joins
        the last group."""
        stem, blocks, tail = self._family.parts(self.model)
        groups: list[list[nn.Module]] = [list(stem)]
        current: list[nn.Module] = []
        for block in blocks:
            if _downsamples(block) and current:
                groups.append(current)
                current = []
            current.append(block)
        groups.append(current + list(tail))
        return [g[0] if len(g) == 1 else nn.ModuleList(g) for g in groups]


for _name in TORCHVISION_ARCHS:
    register_backbone(_name, partial(TorchvisionBackbone, _name))
