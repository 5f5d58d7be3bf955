"""Per-sample augmentation of uint8 image batches with torchvision.transforms.v2.

Each image draws its own crop, flip and TrivialAugment op: one draw per batch would show the
model the same distortion 64 times over. The ops run on uint8 tensors (no PIL round trip); on
32×32 images, all three together cut tiny_cnn's training throughput on 2 CPU cores by about a third
(3500 to 2400 img/s, BENCHMARKS.md). Draws come from torch's global generator, which the loop seeds
per epoch, so augmentation is as reproducible as the rest of training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentSpec:
    """crop_padding: reflect-pad by this many pixels and crop back (0: off). flip: random horizontal
    flip. trivial_augment: TrivialAugmentWide."""

    crop_padding: int = 0
    flip: bool = False
    trivial_augment: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.flip or self.trivial_augment)


def make_augment(spec: AugmentSpec | None, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function from a uint8 N×C×H×W batch to an augmented one, or None when everything is off."""
    per_image = per_image_augment(spec, image_size)
    if per_image is None:
        return None

    def augment(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([per_image(img) for img in batch])

    return augment


def per_image_augment(spec: AugmentSpec | None, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The same ops on one uint8 C×H×W image (streamed data augments image by image in DataLoader workers)."""
    if spec is None or not spec.enabled:
        return None
    from torchvision.transforms import v2

    ops = []
    if spec.crop_padding:
        ops.append(v2.RandomCrop(image_size, padding=spec.crop_padding, padding_mode="reflect"))
    if spec.flip:
        ops.append(v2.RandomHorizontalFlip())
    if spec.trivial_augment:
        ops.append(v2.TrivialAugmentWide())
    return v2.Compose(ops)
