"""Photos at 224 px with imported weights, through the real pipeline: a folder of JPEGs as the target, a local
weights file for a published torchvision architecture (random init, saved as torchvision publishes it: no
download), `data.image_size: 224`. The run must load those exact tensors, keep the published architecture and
its ImageNet normalisation, and evaluate on the photos' test split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from graft.files import read_json, sha256_of
from graft.models.io import build_classifier
from graft.models.weights import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import graft_in_process

pytestmark = pytest.mark.e2e

ARCH = "mobilenet_v3_small"  # the cheapest published architecture graft lists: 0.11 GFLOP a forward pass at 224 px
SIDE = 224
CLASSES = {"poppy": (200, 40, 30), "fern": (40, 150, 50), "lake": (40, 80, 190)}
PER_CLASS = 8  # data.labels_per_class 2 + 3 validation + 3 test


def write_photos(root, per_class: int) -> None:
    """JPEGs of SIDE×SIDE: a colour per class, with noise and an inverted square at a random place."""
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (SIDE, SIDE, 3)), 0, 255)
            y, x = rng.integers(0, SIDE - 64, 2)
            pixels[y:y + 64, x:x + 64] = 255 - pixels[y:y + 64, x:x + 64]
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:02d}.jpg", quality=90)


def write_published_weights(path) -> dict[str, torch.Tensor]:
    """A state dict laid out as torchvision publishes it (its ImageNet classifier included), from a random init."""
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in getattr(torchvision.models, ARCH)(weights=None).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def test_photos_at_224_with_imported_weights(workspace, prefect_server, capsys):
    ws = workspace
    write_photos(ws / "data/sources/photos", PER_CLASS)
    weights = ws / f"data/weights/{ARCH}.safetensors"
    published = write_published_weights(weights)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["data"].update(image_size=SIDE, labels_per_class=2)
    params["model"] = {"backbone": ARCH, "backbone_args": {}}
    params["train"].update(batch_size=8, eval_batch_size=16)
    # Imported weights train nothing on the source, but ingest and prepare still read one: keep it tiny.
    params["ingest"]["source"] = {"kind": "synthetic", "per_class": 3, "classes": ["circle_solid", "square_checker"]}
    params["ingest"]["target"] = {"kind": "imagefolder", "path": "data/sources/photos"}
    params["prepare"].update(target_val_per_class=3, target_test_per_class=3)
    params["pretrain"].update(weights=f"data/weights/{ARCH}.safetensors", input_size=0)
    params["finetune"].update(strategy="full", epochs=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = graft_in_process(capsys, ws, "run", check=True).stdout

    # The file's tensors, and only they, are the pretrained backbone, and they reach the grafted model unchanged.
    digest = sha256_of(weights)
    summary = {line.split("  ")[0]: line.split("  ", 1)[1].strip() for line in out.splitlines() if "  " in line}
    assert summary["pretrained backbone"] == \
        f"imported data/weights/{ARCH}.safetensors (sha256 {digest[:12]}), sees {SIDE}×{SIDE} images"
    pretrain = read_json(ws / "metrics/pretrain.json")
    assert pretrain["weights_sha256"] == digest and pretrain["input_size"] == SIDE and pretrain["epochs"] == 0
    backbone = load_file(str(ws / "models/backbone.safetensors"))
    grafted = load_file(str(ws / "models/grafted.safetensors"))
    kept = {k: v for k, v in published.items() if not k.startswith("classifier.3.")}  # the ImageNet classifier goes
    for key, tensor in kept.items():
        assert torch.equal(backbone[f"backbone.model.{key}"], tensor), key
        assert torch.equal(grafted[f"backbone.model.{key}"], tensor), key
    assert read_json(ws / "models/grafted.json")["backbone_weights_sha256"] == digest

    # The published architecture (its stride-2 stem, not graft's small-image one) at the published input size.
    meta = read_json(ws / "models/finetuned.json")
    assert meta["architecture"] == {"backbone": ARCH, "backbone_args": {"adapt_stem": False}, "in_channels": 3,
                                    "image_size": SIDE}
    assert build_classifier(meta["architecture"], len(CLASSES)).backbone.model.features[0][0].stride == (2, 2)
    raw = read_json(ws / "data/raw/target.json")
    assert raw["classes"] == sorted(CLASSES) and raw["shape"] == [3, SIDE, SIDE]

    # The weights' own normalisation (ImageNet's), not the photos' statistics, travels with the fine-tuned model.
    finetuned = load_file(str(ws / "models/finetuned.safetensors"))
    for name, expected in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        assert finetuned[name].flatten().tolist() == pytest.approx(expected)
        assert backbone[name].flatten().tolist() == pytest.approx(expected)

    evaluation = read_json(ws / "metrics/evaluate.json")
    assert 0.0 <= evaluation["test_acc"] <= 1.0 and 0.0 <= evaluation["baseline_test_acc"] <= 1.0
    per_class = read_json(ws / "reports/evaluate_per_class.json")
    assert {c: row["support"] for c, row in per_class["finetuned"].items()} == {c: 3 for c in CLASSES}
