import pytest
import torch
import torchvision
from torch import nn

from graft.models.backbones import (
    TORCHVISION_ARCHS,
    Backbone,
    available_backbones,
    create_backbone,
)
from graft.models.classifier import GraftClassifier

IMAGE_SIZE = 32
NAMES = available_backbones()


def _images(n: int, channels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=g)


def test_every_expected_backbone_is_registered():
    assert set(NAMES) == {"tiny_cnn", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small",
                          "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_classifier_contract(name, in_channels):
    torch.manual_seed(0)
    backbone = create_backbone(name, in_channels=in_channels, image_size=IMAGE_SIZE)
    assert isinstance(backbone, Backbone)
    assert backbone.in_channels == in_channels
    # eval: deterministic, and BatchNorm running stats stay put for the state-dict comparison.
    model = GraftClassifier(backbone, num_classes=5).eval()
    x = _images(2, in_channels)

    with torch.no_grad():
        assert model.forward_features(x).shape == (2, backbone.feature_dim)
        assert model(x).shape == (2, 5)
    assert model.get_classifier() is model.head

    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    old_head = model.get_classifier()
    model.reset_classifier(7)
    assert model.get_classifier() is not old_head
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    after = model.backbone.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"reset_classifier changed backbone tensors: {changed}"

    groups = backbone.layer_groups()
    assert len(groups) >= 2
    grouped = [id(p) for g in groups for p in g.parameters()]
    assert len(grouped) == len(set(grouped)), "a parameter is in more than one layer group"
    assert set(grouped) == {id(p) for p in backbone.parameters()}, "a parameter is in no layer group"


@pytest.mark.parametrize("name", NAMES)
def test_sgd_step_reduces_loss(name):
    torch.manual_seed(0)
    model = GraftClassifier(create_backbone(name, in_channels=3, image_size=IMAGE_SIZE), num_classes=5).train()
    x, y = _images(4, 3), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        # Stochastic depth (efficientnet, convnext) draws masks in train mode; the same
        # seed makes both evaluations the same function of the parameters.
        torch.manual_seed(1)
        return nn.functional.cross_entropy(model(x), y)

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


def test_unknown_backbone_names_the_name_and_the_choices():
    with pytest.raises(ValueError) as err:
        create_backbone("resnet9000", in_channels=3, image_size=IMAGE_SIZE)
    message = str(err.value)
    assert "resnet9000" in message
    for name in NAMES:
        assert name in message


def test_arguments_of_another_backbone_name_the_params_key():
    # The shipped params.yaml has tiny_cnn's width; switching model.backbone alone must say what to change.
    with pytest.raises(ValueError, match=r"model.backbone_args \{'width': 32\} do not fit resnet18"):
        create_backbone("resnet18", in_channels=3, image_size=IMAGE_SIZE, width=32)


def test_published_architecture_needs_three_channels():
    with pytest.raises(ValueError, match="adapt_stem"):
        create_backbone("resnet18", in_channels=1, image_size=IMAGE_SIZE, adapt_stem=False)


@pytest.mark.parametrize("arch", sorted(TORCHVISION_ARCHS))
def test_published_architecture_matches_torchvision_state_dict(arch):
    # Meta tensors: only names and shapes matter here, and building them is nearly free.
    with torch.device("meta"):
        backbone = create_backbone(arch, in_channels=3, image_size=IMAGE_SIZE, adapt_stem=False)
        published = getattr(torchvision.models, arch)(weights=None)
    ours = {k: v.shape for k, v in backbone.model.state_dict().items()}
    theirs = {k: v.shape for k, v in published.state_dict().items()}
    left_over = sorted(theirs.keys() - ours.keys())
    # Only the final ImageNet Linear is gone; everything else loads as published.
    assert len(left_over) == 2 and all(theirs[k][0] == 1000 for k in left_over)
    assert ours == {k: v for k, v in theirs.items() if k not in left_over}


def test_small_inputs_get_a_gentler_resnet_stem():
    small = create_backbone("resnet18", in_channels=3, image_size=32).model
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)

    large = create_backbone("resnet18", in_channels=1, image_size=224).model
    assert large.conv1.in_channels == 1
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)


def test_tiny_cnn_width():
    backbone = create_backbone("tiny_cnn", in_channels=3, image_size=IMAGE_SIZE, width=8)
    assert backbone.feature_dim == 32
    assert backbone(torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)).shape == (2, 32)
