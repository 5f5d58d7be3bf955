"""`graft predict`: classify image files with a registered model (the champion by default)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from graft import tracking
from graft.data.images import decode_image_file


def predict_files(root: Path, uri: str, files: list[Path]) -> tuple[dict, list[tuple[Path, str, float]]]:
    version = tracking.resolve_version(root, uri)
    classes = json.loads(version["tags"].get("graft.classes", "null") or "null")
    shape = json.loads(version["tags"].get("graft.input_shape", "null") or "null")
    if not classes or not shape:
        raise tracking.TrackingError(f"{uri}: version {version['version']} lacks graft's class and input-shape tags; "
                                     f"was it registered by graft?")
    channels, size = shape[0], shape[1]
    # Decode every file first: one unreadable file stops before any model is loaded.
    batch = torch.stack([decode_image_file(Path(f), size, channels) for f in files])
    model = tracking.load_version_model(root, version["name"], version["version"])
    probs = torch.as_tensor(model.predict(batch.numpy()))
    best = probs.max(dim=1)
    return version, [(Path(f), classes[i], p) for f, i, p in zip(files, best.indices.tolist(), best.values.tolist())]
