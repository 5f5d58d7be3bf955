"""`graft predict`: classify image files with a registered model (the champion by default)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from graft import tracking
from graft.data.images import decode_image_file
from graft.paths import Paths
from graft.console import warn


def predict_files(root: Path, uri: str, files: list[Path]) -> tuple[dict, list[tuple[Path, str, float]]]:
    version = tracking.resolve_version(root, uri)
    classes = json.loads(version["tags"].get("graft.classes", "null") or "null")
    shape = json.loads(version["tags"].get("graft.input_shape", "null") or "null")
    if not classes or not shape:
        raise tracking.TrackingError(f"{uri}: version {version['version']} lacks graft's class and input-shape tags; "
                                     f"was it registered by graft?")
    warn_if_classes_differ(root, version, classes)
    channels, size = shape[0], shape[1]
    # Decode every file first: one unreadable file stops before any model is loaded.
    batch = torch.stack([decode_image_file(Path(f), size, channels) for f in files])
    model = tracking.load_version_model(root, version["name"], version["version"])
    probs = torch.as_tensor(model.predict(batch.numpy()))
    best = probs.max(dim=1)
    return version, [(Path(f), classes[i], p) for f, i, p in zip(files, best.indices.tolist(), best.values.tolist())]


def target_classes(root: Path) -> list[str] | None:
    """The current target's classes, as prepare last wrote them (None when prepare has not run)."""
    manifest = Paths.at(root).prepared("target") / "manifest.json"
    try:
        return json.loads(manifest.read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def warn_if_classes_differ(root: Path, version: dict, classes: list[str]) -> None:
    """One warning line when the model predicts other classes than the current target has."""
    current = target_classes(root)
    if current is None or list(current) == list(classes):
        return
    label = f"{version['name']} v{version['version']}"
    if "champion" in version.get("aliases", []):
        label += " (champion)"
    try:
        matching = [v["version"] for v in tracking.model_versions(root, version["name"])
                    if json.loads(v["tags"].get("graft.classes", "null") or "null") == list(current)]
    except (tracking.TrackingError, ValueError):
        matching = []
    fix = (f"`graft promote {matching[-1]} --reason ...` (v{matching[-1]} has these classes) or a new `graft run`"
           if matching else "a new `graft run` (no registered version has these classes yet)")
    warn(f"{label} predicts the classes {classes}, but the current target's are {current}; "
         f"its labels may not mean what the data means now. Fix: {fix}")
