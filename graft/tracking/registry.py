"""Models and the registry: the classifier logged as an MLflow model, its registered versions, their
aliases (`challenger`, `champion`) and the promotion by hand."""

from __future__ import annotations

import time
from pathlib import Path

from graft.tracking.store import TrackingError, check_reachable, client_for, fluent, tracking_uri, with_retries


class VersionNotFound(TrackingError):
    """The store answered: it has no such model version or alias."""


def parse_model_uri(uri: str) -> tuple[str, str]:
    """`models:/<name>@<alias>` or `models:/<name>/<version>` -> (name, alias-or-version)."""
    if not uri.startswith("models:/"):
        raise TrackingError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, ref = rest.split("@", 1)
    elif "/" in rest:
        name, ref = rest.rsplit("/", 1)
    else:
        raise TrackingError(f"{uri!r}: name an alias (@champion) or a version (/3)")
    if not name or not ref:
        raise TrackingError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return name, ref


def resolve_version(root: Path, uri: str) -> dict:
    """Everything the registry knows of one model version, found by alias or number. TrackingError saying
    "not found" when the store answers that it has no such version; retried, then TrackingError, when the
    store does not answer (never mistaken for "no such version": that would promote without a comparison)."""
    from mlflow.exceptions import MlflowException

    name, ref = parse_model_uri(uri)
    client = client_for(root)

    def lookup():
        try:
            return client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return e  # an answer: there is no such version
            raise

    found = with_retries(f"looking up {uri} in {tracking_uri(root)}", lookup)
    if isinstance(found, MlflowException):
        raise VersionNotFound(f"{uri}: not found in {tracking_uri(root)} ({found.message.splitlines()[0]})")
    mv = found
    return {"name": name, "version": str(mv.version), "source": mv.source, "run_id": mv.run_id,
            "tags": dict(mv.tags), "aliases": sorted(mv.aliases), "created_ms": mv.creation_timestamp}


def champion_version(root: Path, name: str) -> dict | None:
    """The current champion of registered model `name`, or None."""
    return alias_version(root, name, "champion")


def alias_version(root: Path, name: str, alias: str) -> dict | None:
    """The version of registered model `name` that holds `alias`, or None."""
    try:
        return resolve_version(root, f"models:/{name}@{alias}")
    except VersionNotFound:
        return None


def log_classifier(root: Path, run_id: str, model, classes: list[str], channels: int, image_size: int) -> str:
    """Log the model with mlflow.pytorch (pt2: a traced graph, no pickled code) so that
    `mlflow.pyfunc.load_model(...).predict(uint8 N×C×H×W)` returns class probabilities.

    Preprocessing travels inside: the graft classifier takes raw uint8 and normalises itself.
    """
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    import mlflow
    import mlflow.pytorch

    class Probabilities(torch.nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, images):
            return self.classifier(images).softmax(dim=1)

    wrapped = Probabilities(model.cpu().eval()).eval()
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, channels, image_size, image_size))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes)))]))
    # Batch of 2: torch.export keeps a size-1 batch dimension static.
    example = np.zeros((2, channels, image_size, image_size), dtype=np.uint8)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]
    with fluent(root), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(wrapped, name="model", signature=signature, input_example=example,
                                        serialization_format="pt2", pip_requirements=requirements,
                                        metadata={"classes": classes, "image_size": image_size, "channels": channels})
    return info.model_uri


def register_version(root: Path, name: str, model_uri: str, tags: dict[str, str], run_id: str) -> str:
    """Register `model_uri` (logged by `run_id`) as a new version of `name`, with retries, at most once: a
    retry first looks for a version this run already registered. Returns the version number."""
    import logging

    logging.getLogger("mlflow.tracking._model_registry").setLevel(logging.WARNING)
    client = client_for(root)

    def find_or_register() -> str:
        mine = [mv for mv in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                if mv.source == model_uri or mv.tags.get("graft.model_uri") == model_uri]
        if mine:
            return str(mine[0].version)
        with fluent(root) as mlflow:
            return str(mlflow.register_model(model_uri, name, tags={**tags, "graft.model_uri": model_uri}).version)

    return with_retries(f"registering {name} in {tracking_uri(root)}", find_or_register)


def load_version_model(root: Path, name: str, version: str):
    """The registered model as a pyfunc: `.predict(uint8 N×C×H×W) -> probabilities`."""
    import mlflow.pyfunc

    with fluent(root):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def set_alias(root: Path, name: str, alias: str, version: str) -> None:
    with_retries(f"setting {name}@{alias}", client_for(root).set_registered_model_alias, name, alias, version)


def version_aliases(root: Path, name: str, version: str) -> list[str]:
    return list(with_retries(f"reading {name} v{version}", client_for(root).get_model_version, name, version).aliases)


def model_versions(root: Path, name: str) -> list[dict]:
    """Every version of registered model `name`, oldest first: version, tags and creation time (no aliases:
    MLflow's search leaves them out). TrackingError if the store does not answer."""
    client = client_for(root)
    found = with_retries(f"listing the versions of {name!r} in {tracking_uri(root)}",
                         client.search_model_versions, f"name = '{name}'")
    rows = [{"name": name, "version": str(mv.version), "tags": dict(mv.tags), "created_ms": mv.creation_timestamp}
            for mv in found]
    return sorted(rows, key=lambda r: int(r["version"]))


def promote_by_hand(root: Path, name: str, version: str, reason: str) -> str | None:
    """Move `champion` of `name` to `version`, bypassing the gate; the reason and the previous champion are
    tags on the version (`graft.promoted_by_hand`, `graft.previous_champion`, `graft.promoted_at`).
    Returns the previous champion's version (None if there was none; `version` itself if it already was
    champion, and then nothing is written). TrackingError, naming the existing
    versions, if there is no such version; the alias is moved only after the tags are written."""
    check_reachable(root)
    versions = [v["version"] for v in model_versions(root, name)]
    if version not in versions:
        existing = f"its versions are {', '.join(versions)}" if versions else "it has no versions registered"
        raise TrackingError(f"{name} has no version {version} in {tracking_uri(root)}; {existing}")
    previous = champion_version(root, name)
    before = previous["version"] if previous else None
    if before == version:
        return before  # nothing moves; its tags stay those of the promotion that made it champion
    client = client_for(root)
    tags = {"graft.promoted_by_hand": reason, "graft.previous_champion": before or "none",
            "graft.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for key, value in tags.items():
        with_retries(f"tagging {name} v{version}", client.set_model_version_tag, name, version, key, value)
    with_retries(f"moving the champion alias of {name}", client.set_registered_model_alias, name, "champion",
                 version)
    return before
