"""Turn one configured source (synthetic, imagefolder, idx, torchvision) into an ImageDataset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from graft.config import (DEFAULT_CLASSES, IdxSource, ImageFolderSource, Params, SklearnDigitsSource, SyntheticSource,
                          TorchvisionSource)
from graft.data.dataset import DataError, ImageDataset


def _resolve(root: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else root / path


def load_source(spec: Any, domain: str, params: Params, root: Path) -> tuple[ImageDataset, list[dict]]:
    """The dataset of one domain, with its classes selected and in order, plus any skipped files."""
    size, channels = params.data.image_size, params.data.channels
    skipped: list[dict] = []
    if isinstance(spec, SyntheticSource):
        from graft.data import synthetic

        classes = spec.classes or synthetic.default_classes(domain)
        return synthetic.generate(classes, spec.per_class, size, channels, params.seed, spec.style), skipped
    if isinstance(spec, SklearnDigitsSource):
        from graft.data.sklearn_digits import load_sklearn_digits

        classes = spec.classes or DEFAULT_CLASSES["sklearn_digits"](domain)
        return load_sklearn_digits(size, channels, classes), skipped
    if isinstance(spec, ImageFolderSource):
        from graft.data.imagefolder import load_imagefolder

        ds, skipped = load_imagefolder(_resolve(root, spec.path), size, channels, classes=spec.classes,
                                       bad_files=params.ingest.bad_files)
        return ds, skipped
    if isinstance(spec, IdxSource):
        from graft.data.idx import load_idx

        ds = load_idx(_resolve(root, spec.images), _resolve(root, spec.labels), size, channels,
                      class_names=spec.class_names, classes=spec.classes)
        return ds, skipped
    if isinstance(spec, TorchvisionSource):
        from graft.data.torchvision_source import load_torchvision

        ds = load_torchvision(spec.name, _resolve(root, spec.root), size, channels, split=spec.split,
                              download=spec.download, classes=spec.classes)
        return ds, skipped
    raise TypeError(f"unsupported source {spec!r}")


def load_source_test(spec: Any, params: Params, root: Path, classes: list[str]) -> ImageDataset | None:
    """The test split a source ships apart from its training files (idx test_images and test_labels), with the
    training split's `classes` in the same order; None for a source without one."""
    if not (isinstance(spec, IdxSource) and spec.test_images):
        return None
    from graft.data.idx import load_idx

    images = _resolve(root, spec.test_images)
    test = load_idx(images, _resolve(root, spec.test_labels), params.data.image_size, params.data.channels,
                    class_names=spec.class_names)
    missing = [c for c in classes if c not in test.classes]
    if missing:
        raise DataError(f"{images}: the test files have no class {missing} (their labels end at "
                        f"{len(test.classes) - 1}), which the training files have; give the test files of the same "
                        f"dataset, or leave these classes out with `classes`")
    return test.select_classes(classes)


def describe_source(spec: Any) -> str:
    if isinstance(spec, SyntheticSource):
        return f"synthetic ({spec.per_class} per class{', shifted style' if spec.style == 'shifted' else ''})"
    if isinstance(spec, SklearnDigitsSource):
        return "scikit-learn's handwritten digits"
    if isinstance(spec, ImageFolderSource):
        return f"imagefolder {spec.path}"
    if isinstance(spec, IdxSource):
        return f"idx {spec.images}" + (f" (test split: {spec.test_images})" if spec.test_images else "")
    return f"torchvision {spec.name} at {spec.root}"


def folder_fingerprint(folder: Path) -> str:
    """A cheap fingerprint of an image folder: every visible file's relative path, size and mtime.

    Cheap on purpose (no reads): it runs on every scheduled check of folders that may be large.
    A false alarm costs one `ingest`, after which DVC finds the raw data unchanged."""
    h = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = Path(dirpath) / name
            st = path.stat()
            h.update(f"{path.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def external_folders(params: Params, root: Path) -> dict[str, Path]:
    """Image-folder sources outside data/sources/ (DVC's dependency), by domain."""
    sources = Path(root).resolve() / "data" / "sources"
    out = {}
    for domain in ("source", "target"):
        spec = getattr(params.ingest, domain)
        if isinstance(spec, ImageFolderSource):
            folder = _resolve(root, spec.path).resolve()
            if not folder.is_relative_to(sources):
                out[domain] = folder
    return out


def source_fingerprints(params: Params, root: Path) -> dict[str, str]:
    """What `ingest` records for the sources DVC cannot watch, keyed by domain."""
    return {domain: folder_fingerprint(folder) for domain, folder in external_folders(params, root).items()}
