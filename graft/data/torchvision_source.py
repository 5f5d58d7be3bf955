"""A torchvision.datasets classification dataset -> ImageDataset.

Datasets that keep all images in one uint8 array (`.data`: MNIST family N×H×W tensors, CIFAR
N×H×W×C and SVHN N×C×H×W numpy arrays) are converted in bulk with resize_batch; any other dataset
is iterated and each PIL image converted with to_uint8_tensor. Nothing is downloaded unless
download=True.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from graft.data.dataset import DataError, ImageDataset
from graft.data.images import _check_target, resize_batch, to_uint8_tensor

EXAMPLE_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN")


def _dataset_class(name: str) -> type:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.utils.data.Dataset)):
        known = [n for n in dir(tvd) if inspect.isclass(getattr(tvd, n)) and issubclass(getattr(tvd, n), torch.utils.data.Dataset)]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"torchvision.datasets has no dataset {name!r}.{hint} "
            f"Set ingest.<domain>.name to a torchvision.datasets class, e.g. {', '.join(EXAMPLE_DATASETS)} (names are case-sensitive)."
        )
    return cls


def _construct(cls: type, name: str, root: Path, split: str, download: bool) -> Any:
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "root" in params:
        kwargs["root"] = str(root)
    if "train" in params:
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    elif split != "train":
        raise DataError(f"torchvision.datasets.{name} has no train/test split; use split: train")
    if "download" in params:
        kwargs["download"] = download
    try:
        return cls(**kwargs)
    except RuntimeError as exc:
        msg = str(exc)
        if not download and ("not found" in msg.lower() or "download=true" in msg.lower()):
            raise DataError(
                f"torchvision.datasets.{name}: dataset files are missing (or corrupted) under {root} "
                f"(torchvision says: {msg.strip()}). Copy the files there, or set `download: true` for this "
                "domain in params (ingest.<domain>.download) and run on a machine that is online."
            ) from exc
        raise DataError(f"torchvision.datasets.{name} under {root} could not be loaded: {msg.strip()}") from exc
    except ImportError as exc:
        raise DataError(f"torchvision.datasets.{name} needs a package that is not installed: {exc}") from exc
    except (ValueError, TypeError, OSError) as exc:
        raise DataError(f"torchvision.datasets.{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: {exc}") from exc


def _labels_attr(ds: Any, n: int) -> torch.Tensor | None:
    for attr in ("targets", "labels"):
        value = getattr(ds, attr, None)
        if value is None:
            continue
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError):
            continue
        if t.ndim == 1 and t.shape[0] == n and not t.is_floating_point() and t.dtype != torch.bool:
            return t.to(torch.int64)
    return None


def _bulk_images(ds: Any) -> torch.Tensor | None:
    """`.data` as uint8 N×C×H×W, when the dataset keeps its images in one array; else None.

    The layout (N×H×W, N×H×W×C or N×C×H×W) is decided by comparing with the size of item 0.
    """
    data = getattr(ds, "data", None)
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            return None
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or data.ndim not in (3, 4):
        return None
    if data.shape[0] != len(ds) or data.shape[0] == 0:
        return None
    first = ds[0]
    img = first[0] if isinstance(first, (tuple, list)) else None
    if not isinstance(img, Image.Image):
        return None
    w, h = img.size
    if data.ndim == 3:
        return data.unsqueeze(1) if tuple(data.shape[1:]) == (h, w) else None
    if tuple(data.shape[1:3]) == (h, w) and data.shape[3] in (1, 3):
        return data.permute(0, 3, 1, 2)
    if tuple(data.shape[2:4]) == (h, w) and data.shape[1] in (1, 3):
        return data
    return None


def _class_names(ds: Any, n_labels: int) -> list[str]:
    names = getattr(ds, "classes", None)
    if isinstance(names, (list, tuple)) and len(names) >= n_labels and len(set(map(str, names))) == len(names):
        return [str(c) for c in names]
    return [str(i) for i in range(n_labels)]


def _label_of(target: Any, name: str, index: int) -> int:
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        target = target.item()
    if isinstance(target, np.generic):
        target = target.item()
    if isinstance(target, bool) or not isinstance(target, int):
        raise DataError(
            f"torchvision.datasets.{name}: item {index} has target {target!r}, not a class index; "
            "only classification datasets (one integer label per image) can be used"
        )
    return target


def _image_of(img: Any, name: str, index: int) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim in (2, 3):
        return Image.fromarray(img)
    raise DataError(f"torchvision.datasets.{name}: item {index} is {type(img).__name__}, not a PIL image")


def _iterate(ds: Any, name: str, image_size: int, channels: int, keep: set[int] | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    n = len(ds)
    out = torch.empty((n, channels, image_size, image_size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    k = 0
    max_label = -1
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"torchvision.datasets.{name}: item {i} is not an (image, label) pair")
        label = _label_of(item[1], name, i)
        if label < 0:
            raise DataError(f"torchvision.datasets.{name}: item {i} has negative label {label}")
        max_label = max(max_label, label)
        if keep is not None and label not in keep:
            continue
        out[k] = to_uint8_tensor(_image_of(item[0], name, i), image_size, channels)
        labels[k] = label
        k += 1
    if k < n:
        out, labels = out[:k].clone(), labels[:k].clone()
    return out, labels, max_label + 1


def load_torchvision(
    name: str,
    root: Path,
    image_size: int,
    channels: int,
    split: str = "train",
    download: bool = False,
    classes: list[str] | None = None,
) -> ImageDataset:
    """Load torchvision.datasets.<name> from root into an ImageDataset.

    split: "train" or "test"; passed as train=(split == "train") or split=split, whichever the
        dataset's constructor takes.
    download: passed on; when False and the files are missing, DataError says how to allow it.
    classes: keep only these classes (names as in the dataset's `.classes`, else label numbers),
        relabelled in this order. Selection happens before any resizing.
    Class names come from the dataset's `.classes` when present, else "0", "1", ...
    """
    _check_target(image_size, channels)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    cls = _dataset_class(name)
    ds = _construct(cls, name, root, split, download)

    bulk = _bulk_images(ds)
    labels = _labels_attr(ds, len(ds)) if bulk is not None else None
    if bulk is not None and labels is not None:
        if labels.numel() and int(labels.min()) < 0:
            raise DataError(f"torchvision.datasets.{name}: negative label {int(labels.min())}")
        n_labels = int(labels.max()) + 1 if labels.numel() else 0
        raw = ImageDataset(bulk, labels.contiguous(), _class_names(ds, n_labels))
        if classes is not None:
            raw = _select(raw, classes, name)
        return ImageDataset(resize_batch(raw.images, image_size, channels), raw.labels, raw.classes)

    # Generic path: one PIL image at a time. Class names are needed up front to pick labels.
    names_attr = getattr(ds, "classes", None)
    keep: set[int] | None = None
    if classes is not None and isinstance(names_attr, (list, tuple)):
        names = [str(c) for c in names_attr]
        keep = {names.index(c) for c in classes if c in names}
    images, labels, n_labels = _iterate(ds, name, image_size, channels, keep)
    dataset = ImageDataset(images, labels, _class_names(ds, n_labels))
    return _select(dataset, classes, name) if classes is not None else dataset


def _select(ds: ImageDataset, classes: list[str], name: str) -> ImageDataset:
    try:
        return ds.select_classes(list(classes))
    except DataError as err:
        raise DataError(f"torchvision.datasets.{name}: {err}; use the dataset's class names") from err
