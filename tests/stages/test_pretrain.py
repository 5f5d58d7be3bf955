import hashlib
import urllib.error

import pytest
import torch
import torchvision

from graft.config import ConfigError, validate_params
from graft.files import read_json
from graft.models.backbones import create_backbone
from graft.models.io import build_classifier, load_backbone_into, load_classifier
from graft.models.weights import IMAGENET_MEAN, WeightsError
from graft.paths import Paths
from graft.stages import baseline, finetune, pretrain, replace_head
from tests.conftest import merge, tiny_params_dict


def test_trains_backbone_and_writes_its_files(stage_root, tiny_params):
    metrics = pretrain.run(tiny_params, Paths.at(stage_root))
    assert 0.0 <= metrics["source_test_acc"] <= 1.0 and metrics["epochs"] == 2
    meta = read_json(stage_root / "models/backbone.json")
    assert meta["kind"] == "backbone" and meta["architecture"]["backbone"] == "tiny_cnn"
    assert meta["feature_dim"] > 0 and meta["weights"] == "train"
    assert read_json(stage_root / "metrics/pretrain.json")["epochs"] == 2
    history = (stage_root / "plots/pretrain.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) == 3
    # The saved backbone loads into a fresh model of the same architecture.
    model = build_classifier(meta["architecture"], 5)
    load_backbone_into(stage_root / "models/backbone.safetensors", model)


def test_is_bit_identical_when_rerun(stage_root, tmp_path, tiny_params):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(stage_root, other)
    pretrain.run(tiny_params, Paths.at(stage_root))
    pretrain.run(tiny_params, Paths.at(other))
    assert (stage_root / "models/backbone.safetensors").read_bytes() == (other / "models/backbone.safetensors").read_bytes()
    assert read_json(stage_root / "metrics/pretrain.json") == read_json(other / "metrics/pretrain.json")


# ---------------------------------------------------------------- imported weights

def params_with(backbone=None, **sections):
    raw = merge(tiny_params_dict(), sections)
    if backbone:
        raw["model"] = {"backbone": backbone, "backbone_args": {}}
    return validate_params(raw)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_imports_a_local_state_dict_end_to_end(stage_root):
    torch.manual_seed(7)
    source = create_backbone("tiny_cnn", in_channels=3, image_size=16, width=8)
    weights = stage_root / "data/weights/tiny.pt"
    weights.parent.mkdir(parents=True)
    torch.save(source.state_dict(), weights)
    params = params_with(pretrain={"weights": "data/weights/tiny.pt"})
    paths = Paths.at(stage_root)

    metrics = pretrain.run(params, paths)
    meta = read_json(stage_root / "models/backbone.json")
    assert meta["weights"] == "data/weights/tiny.pt" and meta["weights_sha256"] == sha256(weights)
    assert metrics["weights_sha256"] == sha256(weights) == read_json(paths.metric("pretrain"))["weights_sha256"]
    assert meta["architecture"]["image_size"] == 16  # a graft architecture keeps the data's size

    replace_head.run(params, paths)
    grafted, _ = load_classifier(paths.model("grafted"))
    for key, value in source.state_dict().items():
        assert torch.equal(grafted.backbone.state_dict()[key], value), key
    source_mean = read_json(stage_root / "data/prepared/source/manifest.json")["mean"]
    assert grafted.mean.flatten().tolist() == pytest.approx(source_mean)  # a plain state dict has no statistics
    assert finetune.run(params, paths)["epochs"] == 2


@pytest.mark.slow  # a full-size resnet18
def test_imports_published_torchvision_weights_from_a_safetensors_file(stage_root):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    published = torchvision.models.resnet18(weights=None).state_dict()  # as torchvision publishes it, fc included
    weights = stage_root / "data/weights/resnet18.safetensors"
    weights.parent.mkdir(parents=True)
    save_file(published, str(weights))
    # input_size 32 keeps the test fast; left at 0 it would be the published 224.
    params = params_with(backbone="resnet18",
                         pretrain={"weights": "data/weights/resnet18.safetensors", "input_size": 32})
    paths = Paths.at(stage_root)

    pretrain.run(params, paths)
    meta = read_json(stage_root / "models/backbone.json")
    assert meta["architecture"]["backbone_args"] == {"adapt_stem": False} and meta["input_size"] == 32
    replace_head.run(params, paths)
    grafted, _ = load_classifier(paths.model("grafted"))
    assert torch.equal(grafted.backbone.model.conv1.weight, published["conv1.weight"])  # the published 7×7 stem
    assert grafted.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)  # the data's size; the model resizes to 32
    assert grafted.eval()(images).shape == (2, 3)
    finetune.run(params, paths)
    baseline.run(params, paths)  # the control is the same published architecture, from scratch
    _, control_meta = load_classifier(paths.model("baseline"))
    assert control_meta["architecture"] == meta["architecture"]


def test_offline_torchvision_weights_fail_fast_naming_the_local_file_option(stage_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # nothing cached

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    params = params_with(backbone="resnet18",
                         pretrain={"weights": "torchvision:ResNet18_Weights.IMAGENET1K_V1"})
    with pytest.raises(WeightsError) as err:
        pretrain.run(params, Paths.at(stage_root))
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and "offline" in message
    assert "pretrain.weights: data/weights/resnet18-f37072fd.pth" in message
    assert not (stage_root / "models/backbone.safetensors").exists()


def test_torchvision_weights_must_fit_the_backbone(stage_root):
    params = params_with(backbone="resnet18",
                         pretrain={"weights": "torchvision:ResNet50_Weights.IMAGENET1K_V2"})
    with pytest.raises(WeightsError, match="torchvision:ResNet18_Weights.IMAGENET1K_V1"):
        pretrain.run(params, Paths.at(stage_root))


def test_pickled_objects_are_refused(stage_root):
    weights = stage_root / "data/weights/module.pt"
    weights.parent.mkdir(parents=True)
    torch.save(torch.nn.Linear(2, 2), weights)  # a whole module: loading it would run the unpickler
    params = params_with(pretrain={"weights": "data/weights/module.pt"})
    with pytest.raises(WeightsError, match="weights_only=True"):
        pretrain.run(params, Paths.at(stage_root))


def test_weights_of_another_shape_name_the_keys(stage_root):
    weights = stage_root / "data/weights/wide.pt"
    weights.parent.mkdir(parents=True)
    torch.save(create_backbone("tiny_cnn", in_channels=3, image_size=16, width=16).state_dict(), weights)
    params = params_with(pretrain={"weights": "data/weights/wide.pt"})  # tiny params: width 8
    with pytest.raises(WeightsError, match=r"shape mismatches \['blocks.0.0.0.weight"):
        pretrain.run(params, Paths.at(stage_root))


@pytest.mark.parametrize("weights,ok", [("train", True), ("torchvision:ResNet18_Weights.IMAGENET1K_V1", True),
                                        ("data/weights/x.safetensors", True), ("data/weights/x.pth", True),
                                        ("imagenet", False), ("torchvision:resnet18", False)])
def test_weights_param_forms(weights, ok):
    raw = merge(tiny_params_dict(), {"pretrain": {"weights": weights}})
    if ok:
        validate_params(raw)
    else:
        with pytest.raises(ConfigError, match="pretrain.weights"):
            validate_params(raw)


def test_torchvision_weights_in_the_cache_import_offline(stage_root, tmp_path, monkeypatch):
    """What a machine that downloaded them once (or had the file copied into TORCH_HOME) does."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    cached = tmp_path / "torch-home/hub/checkpoints/resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cached)
    params = params_with(backbone="resnet18", pretrain={"weights": "torchvision:ResNet18_Weights.IMAGENET1K_V1"})

    metrics = pretrain.run(params, Paths.at(stage_root))
    meta = read_json(stage_root / "models/backbone.json")
    assert meta["weights_sha256"] == sha256(cached) == metrics["weights_sha256"]
    assert meta["architecture"]["image_size"] == meta["input_size"] == 224  # the published crop size
    assert meta["architecture"]["backbone_args"] == {"adapt_stem": False}
