"""Weights as safetensors with a JSON sidecar that says how to rebuild the module around them.

Only safetensors is ever read here: no pickle, so a weights file cannot carry code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graft.errors import GraftError
from graft.files import read_json
from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.models.heads import HeadSpec


class ModelFileError(GraftError, ValueError):
    """A weights file is missing, unreadable, or does not fit the architecture its sidecar names."""


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def build_classifier(architecture: dict[str, Any], num_classes: int, head: HeadSpec | None = None) -> GraftClassifier:
    """The model an architecture record describes; it resizes inputs to the side its backbone was built for."""
    backbone = create_backbone(architecture["backbone"], in_channels=architecture["in_channels"],
                               image_size=architecture["image_size"], **architecture.get("backbone_args", {}))
    return GraftClassifier(backbone, num_classes, head, input_size=architecture["image_size"])


def architecture_of(params) -> dict[str, Any]:
    """The architecture record of the configured model (params.model + params.data, and pretrain.weights:
    imported weights keep their published architecture and input size). `image_size` is the side the
    backbone sees; the classifier resizes images of the data's size to it."""
    from graft.models.weights import imported_architecture

    if params.pretrain.weights != "train":
        return imported_architecture(params.model.backbone, dict(params.model.backbone_args), params.data.channels,
                                     params.data.image_size, params.pretrain.weights, params.pretrain.input_size)
    return {"backbone": params.model.backbone, "backbone_args": dict(params.model.backbone_args),
            "in_channels": params.data.channels, "image_size": params.data.image_size}


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = sidecar_path(path)
    tmp, tmp_sidecar = path.with_name(f".{path.name}.tmp"), sidecar.with_name(f".{sidecar.name}.tmp")
    try:
        # Both files are complete on disk before either replaces the previous version, so a failed
        # write (a full disk) leaves the previous weights and sidecar as they were.
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp_sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_sidecar.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    tmp_sidecar.replace(sidecar)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    for f in (path, sidecar_path(path)):
        if not f.exists():
            raise ModelFileError(f"{f}: missing; run the stage that writes it (graft run, or dvc repro)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e}); rerun the stage that writes it") from None
    return tensors, read_json(sidecar_path(path))


def describe_mismatch(missing: list[str], unexpected: list[str], shapes: list[str], show: int = 5) -> str:
    """One line naming the keys and shapes that differ between a weights file and a model ('' if none)."""
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            parts.append(f"{label} {items[:show]}{' …' if len(items) > show else ''}")
    return "; ".join(parts)


def _check_fit(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Raise naming the keys and shapes that differ, instead of torch's generic load error."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    mismatch = describe_mismatch(missing, unexpected, shapes)
    if mismatch:
        raise ModelFileError(f"{path}: weights do not fit the architecture: {mismatch}")


def save_classifier(path: Path, model: GraftClassifier, architecture: dict[str, Any], classes: list[str],
                    extra: dict[str, Any] | None = None) -> None:
    head_names = [f"head.{k}" for k in model.head.state_dict()]
    meta = {
        "kind": "classifier",
        "architecture": architecture,
        "head": model.head_spec.to_dict(),
        "num_classes": model.num_classes,
        "classes": classes,
        "feature_dim": model.backbone.feature_dim,
        "head_parameters": head_names,
        "backbone_parameters": [k for k in model.state_dict() if k not in head_names],
        **(extra or {}),
    }
    _save(Path(path), model.state_dict(), meta)


def load_classifier(path: Path) -> tuple[GraftClassifier, dict[str, Any]]:
    tensors, meta = _read(path)
    if meta.get("kind") != "classifier":
        raise ModelFileError(f"{path}: sidecar says kind {meta.get('kind')!r}, expected a classifier")
    model = build_classifier(meta["architecture"], meta["num_classes"], HeadSpec.from_dict(meta["head"]))
    _check_fit(model.state_dict(), tensors, path)
    model.load_state_dict(tensors)
    return model, meta


def save_backbone(path: Path, model: GraftClassifier, architecture: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """The backbone alone (plus the input normalisation it was trained with), without any head."""
    tensors = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    tensors["mean"], tensors["std"] = model.mean, model.std
    meta = {"kind": "backbone", "architecture": architecture, "feature_dim": model.backbone.feature_dim, **(extra or {})}
    _save(Path(path), tensors, meta)


def load_backbone_into(path: Path, model: GraftClassifier) -> dict[str, Any]:
    tensors, meta = _read(path)
    if meta.get("kind") != "backbone":
        raise ModelFileError(f"{path}: sidecar says kind {meta.get('kind')!r}, expected a backbone")
    everything_but_head = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    _check_fit(everything_but_head, tensors, path)
    model.load_state_dict(tensors, strict=False)
    return meta
