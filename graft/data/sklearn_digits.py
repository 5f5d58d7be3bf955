"""scikit-learn's bundled handwritten digits: 1,797 real 8×8 grey scans (about 180 per digit) that ship
inside the package, so a real-image check needs no download. Pixel values 0..16 become 0..255; images
are resized to data.image_size like every other source."""

from __future__ import annotations

import torch

from graft.data.dataset import DataError, ImageDataset
from graft.data.images import _check_target, resize_batch

CLASS_NAMES = [str(d) for d in range(10)]


def load_sklearn_digits(image_size: int, channels: int, classes: list[str]) -> ImageDataset:
    """The digits named in `classes` ("0".."9"), relabelled in that order."""
    _check_target(image_size, channels)
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency of graft
        raise DataError("the sklearn_digits source needs scikit-learn: pip install scikit-learn") from e
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().mul_(255.0 / 16.0).round_().to(torch.uint8).unsqueeze(1)
    raw = ImageDataset(images.contiguous(), torch.from_numpy(digits.target).to(torch.int64), CLASS_NAMES)
    try:
        raw = raw.select_classes([str(c) for c in classes])
    except DataError as err:
        raise DataError(f"sklearn_digits: {err}; the classes are the digits \"0\" to \"9\"") from err
    return ImageDataset(resize_batch(raw.images, image_size, channels), raw.labels, raw.classes)
