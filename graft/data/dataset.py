"""The in-memory form every data source is converted to before graft touches it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graft.errors import GraftError


class DataError(GraftError, ValueError):
    """Input data that graft cannot use; the message names the file or class at fault."""


@dataclass
class ImageDataset:
    """Decoded images, ready for training without any per-image work in the loop.

    images: uint8 tensor N×C×H×W (C is 1 or 3), already resized to the configured size.
    labels: int64 tensor N, indices into `classes`.
    classes: class names, in label order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels must be int64 of length {self.images.shape[0]}, got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select_classes(self, names: list[str]) -> "ImageDataset":
        """Keep only the named classes, relabelled 0..len(names)-1 in the given order."""
        missing = [n for n in names if n not in self.classes]
        if missing:
            raise DataError(f"classes {missing} not found; available: {self.classes}")
        old_to_new = torch.full((len(self.classes),), -1, dtype=torch.int64)
        for new, name in enumerate(names):
            old_to_new[self.classes.index(name)] = new
        new_labels = old_to_new[self.labels]
        keep = new_labels >= 0
        return ImageDataset(self.images[keep].contiguous(), new_labels[keep].contiguous(), list(names))
