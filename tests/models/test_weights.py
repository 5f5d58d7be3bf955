import pytest
import torch
import torchvision

from graft.models.backbones import TORCHVISION_ARCHS, create_backbone
from graft.models.weights import ImportedWeights, WeightsError, imported_architecture, load_into_backbone


@pytest.mark.parametrize("arch", sorted(TORCHVISION_ARCHS))
def test_published_state_dicts_load_into_the_published_architecture(arch, tmp_path):
    torch.manual_seed(0)
    published = getattr(torchvision.models, arch)(weights=None).state_dict()
    backbone = create_backbone(arch, in_channels=3, image_size=224, adapt_stem=False)
    load_into_backbone(backbone, ImportedWeights(published, "test", tmp_path / "w.pth", "0"))
    ours = backbone.model.state_dict()
    for key, value in ours.items():
        assert torch.equal(value, published[key]), key


def test_an_adapted_stem_does_not_take_published_weights(tmp_path):
    published = torchvision.models.resnet18(weights=None).state_dict()
    backbone = create_backbone("resnet18", in_channels=3, image_size=32)  # adapt_stem: the CIFAR stem
    with pytest.raises(WeightsError, match=r"model.conv1.weight: file \(64, 3, 7, 7\) vs model \(64, 3, 3, 3\)"):
        load_into_backbone(backbone, ImportedWeights(published, "test", tmp_path / "w.pth", "0"))


def test_imported_architecture():
    weights = "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    published = imported_architecture("resnet18", {}, 3, 32, weights, 0)
    assert published == {"backbone": "resnet18", "backbone_args": {"adapt_stem": False}, "in_channels": 3,
                         "image_size": 224}
    assert imported_architecture("resnet18", {}, 3, 32, weights, 96)["image_size"] == 96
    adapted = imported_architecture("resnet18", {"adapt_stem": True}, 3, 32, "data/weights/cifar.pt", 0)
    assert adapted["image_size"] == 32
    with pytest.raises(WeightsError, match="data.channels: 3"):
        imported_architecture("resnet18", {}, 1, 32, weights, 0)
