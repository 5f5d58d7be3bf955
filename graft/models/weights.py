"""Backbone weights from elsewhere: torchvision's published weights, or a local file.

Nothing here ever runs the full unpickler: safetensors files are plain tensors, and .pt/.pth/.bin
files are read with torch.load(weights_only=True), which refuses anything but tensors and plain
containers. torchvision's weights download where the machine is online (into torch's cache,
TORCH_HOME); offline, the error says how to use a local file instead.

Imported weights keep the architecture they were published for: torchvision backbones are built
with adapt_stem=False unless model.backbone_args says otherwise, and see the published input size
(224), to which the classifier resizes the data's images on the fly (classifier.py). Resizing
inside the model rather than at ingest keeps the data 32×32 in memory and on disk, keeps the
control and every other stage unchanged, and makes the saved model take images of any size.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from graft.errors import GraftError
from graft.files import sha256_of
from graft.models.backbones import TORCHVISION_ARCHS, Backbone
from graft.models.io import describe_mismatch

# What torchvision's ImageNet weights were trained with (their transforms() say the same).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PUBLISHED_SIZE = 224
DOWNLOAD_TIMEOUT_S = 30
TORCHVISION_PREFIX = "torchvision:"
# Keys a published or graft file may hold beyond the backbone: the classifier it was published with.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")


class WeightsError(GraftError, ValueError):
    """Weights cannot be found, read, or fitted to the backbone; the message says what to change."""


@dataclass
class ImportedWeights:
    """state: the tensors as read. source: pretrain.weights as given. file: the file read (for
    torchvision weights, the cached download). sha256: of that file. mean/std: the normalisation
    the weights were trained with, where known."""

    state: dict[str, torch.Tensor]
    source: str
    file: Path
    sha256: str
    mean: list[float] | None = None
    std: list[float] | None = None


def is_published(backbone: str, backbone_args: dict) -> bool:
    """Imported torchvision backbones keep the published stem unless adapt_stem is asked for."""
    return backbone in TORCHVISION_ARCHS and not backbone_args.get("adapt_stem", False)


def torchvision_weights(spec: str, backbone: str):
    """The torchvision weights enum member named by `torchvision:<Enum>.<MEMBER>`, checked against the backbone."""
    from torchvision.models import get_model_weights, get_weight

    name = spec.removeprefix(TORCHVISION_PREFIX)
    if backbone not in TORCHVISION_ARCHS:
        raise WeightsError(f"pretrain.weights = {spec!r}, but model.backbone = {backbone!r} has no torchvision "
                           f"weights; use a torchvision backbone ({', '.join(sorted(TORCHVISION_ARCHS))}), "
                           f"weights: train, or a local file")
    choices = [f"{TORCHVISION_PREFIX}{m}" for m in get_model_weights(backbone)]
    try:
        weights = get_weight(name)
    except (ValueError, KeyError) as e:
        raise WeightsError(f"pretrain.weights = {spec!r}: torchvision has no such weights ({e}); for "
                           f"{backbone}: {', '.join(choices)}") from None
    if type(weights) is not get_model_weights(backbone):
        raise WeightsError(f"pretrain.weights = {spec!r} belongs to another architecture than model.backbone = "
                           f"{backbone!r}; use one of {', '.join(choices)}")
    return weights


def imported_architecture(backbone: str, backbone_args: dict, channels: int, data_image_size: int, weights: str,
                          input_size: int = 0) -> dict:
    """The architecture record for imported weights (see the module docstring)."""
    args = dict(backbone_args)
    if backbone in TORCHVISION_ARCHS:
        args.setdefault("adapt_stem", False)
    published = is_published(backbone, args)
    if published and channels != 3:
        raise WeightsError(f"pretrain.weights = {weights!r} is a published RGB architecture, but data.channels = "
                           f"{channels}; set data.channels: 3, or model.backbone_args.adapt_stem: true "
                           f"(which re-initialises the first convolution)")
    if not input_size:  # 0: automatic
        input_size = data_image_size
        if published:
            input_size = PUBLISHED_SIZE
            if weights.startswith(TORCHVISION_PREFIX):
                input_size = int(torchvision_weights(weights, backbone).transforms().crop_size[0])
    return {"backbone": backbone, "backbone_args": args, "in_channels": channels, "image_size": input_size}


def _download(spec: str, backbone: str) -> ImportedWeights:
    weights = torchvision_weights(spec, backbone)
    filename = os.path.basename(urlparse(weights.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub sets none: a network that drops packets would hang
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, weights_only=True)
    except OSError as e:  # URLError, HTTPError, timeouts: no network, or no such file there
        raise WeightsError(
            f"pretrain.weights = {spec!r}: could not download {weights.url} ({getattr(e, 'reason', e)}); this "
            f"machine looks offline. Download that file where there is a network, then either set "
            f"pretrain.weights to the local file (e.g. pretrain.weights: data/weights/{filename}, read with "
            f"torch.load(weights_only=True)) or put it in torch's cache as {cached}") from None
    finally:
        socket.setdefaulttimeout(previous)
    transforms = weights.transforms()
    return ImportedWeights(state, spec, cached, sha256_of(cached), list(transforms.mean), list(transforms.std))


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """A state dict, also from the common {"state_dict": ...} / {"model": ...} checkpoint layouts."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of names to tensors); save one with "
                           f"torch.save(model.state_dict(), path) or safetensors")
    return obj


def _read_file(spec: str, root: Path) -> ImportedWeights:
    path = Path(spec) if Path(spec).is_absolute() else Path(root) / spec
    if not path.is_file():
        raise WeightsError(f"pretrain.weights = {spec!r}: no such file ({path}); put the weights file there "
                           f"(data/weights/ is a DVC dependency of pretrain), or set pretrain.weights: train")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    else:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise WeightsError(f"{path}: not a plain state dict that torch.load(weights_only=True) can read ({e}). "
                               f"graft never runs the full unpickler; re-save the weights with "
                               f"torch.save(model.state_dict(), path) or as safetensors") from None
    return ImportedWeights(_unwrap(state, path), spec, path, sha256_of(path))


def load_weights(spec: str, backbone: str, root: Path) -> ImportedWeights:
    """Read the weights `spec` (pretrain.weights) names: download torchvision's, or read a local file."""
    if spec.startswith(TORCHVISION_PREFIX):
        return _download(spec, backbone)
    return _read_file(spec, root)


def _target_key(key: str, target: dict) -> str | None:
    """The backbone key a file key stands for: graft files prefix `backbone.`, torchvision's have no
    `model.` (TorchvisionBackbone keeps torchvision's names under it), DDP adds `module.`."""
    key = key.removeprefix("module.")
    for candidate in (key, key.removeprefix("backbone."), "model." + key.removeprefix("backbone.")):
        if candidate in target:
            return candidate
    return None


def load_into_backbone(backbone: Backbone, weights: ImportedWeights) -> None:
    """Copy the weights into `backbone`, or say exactly which keys or shapes do not fit."""
    target = backbone.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in weights.state.items():
        name = _target_key(key, target)
        if name is not None:
            mapped[name] = value
        elif key not in ("mean", "std") and not key.removeprefix("module.").removeprefix("backbone.") \
                .removeprefix("model.").startswith(CLASSIFIER_PREFIXES):
            unexpected.append(key)
    # Files older than BatchNorm's batch counter lack it; torch treats it as 0 then, and so do we.
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}" for k, v in mapped.items()
              if v.shape != target[k].shape]
    mismatch = describe_mismatch(missing, unexpected, shapes, show=3)
    if mismatch:
        raise WeightsError(f"{weights.file}: the weights do not fit model.backbone ({mismatch}). Check "
                           f"model.backbone and model.backbone_args: the file must hold that architecture "
                           f"(published torchvision weights need adapt_stem: false, the default for imports)")
    backbone.load_state_dict({**target, **mapped})


def normalisation_of(weights: ImportedWeights, published: bool) -> tuple[list[float], list[float]] | None:
    """The mean/std the weights expect: a graft file carries its own, torchvision's are ImageNet's;
    None when unknown (the caller uses the source domain's)."""
    if "mean" in weights.state and "std" in weights.state:
        return weights.state["mean"].flatten().tolist(), weights.state["std"].flatten().tolist()
    if weights.mean is not None:
        return weights.mean, weights.std
    if published:
        return IMAGENET_MEAN, IMAGENET_STD
    return None
