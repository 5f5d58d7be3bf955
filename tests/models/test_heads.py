import json

import pytest
import torch
from torch import nn

from graft.models.heads import HeadSpec, create_head


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def test_linear_head_is_a_bare_linear():
    head = create_head(HeadSpec(), in_features=16, num_classes=5)
    assert isinstance(head, nn.Linear)
    assert head(torch.randn(3, 16)).shape == (3, 5)


def test_linear_head_dropout_comes_before_the_linear():
    head = create_head(HeadSpec(kind="linear", dropout=0.3), in_features=16, num_classes=5)
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.3
    assert isinstance(head[-1], nn.Linear)
    assert head(torch.randn(3, 16)).shape == (3, 5)


def test_mlp_head_default():
    head = create_head(HeadSpec(kind="mlp"), in_features=16, num_classes=5)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 512), (512, 5)]
    assert _count(head, nn.ReLU) == 1
    assert _count(head, nn.BatchNorm1d) == 0 and _count(head, nn.Dropout) == 0
    assert head(torch.randn(3, 16)).shape == (3, 5)


def test_mlp_head_with_batchnorm_and_dropout():
    spec = HeadSpec(kind="mlp", hidden=[32, 8], dropout=0.25, batchnorm=True)
    head = create_head(spec, in_features=16, num_classes=5)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 8), (8, 5)]
    assert [m.num_features for m in head.modules() if isinstance(m, nn.BatchNorm1d)] == [16, 32, 8]
    assert [m.p for m in head.modules() if isinstance(m, nn.Dropout)] == [0.25] * 3
    assert _count(head, nn.ReLU) == 2
    assert isinstance(head[-1], nn.Linear), "logits must not go through a ReLU"
    head.train()
    assert head(torch.randn(3, 16)).shape == (3, 5)


def test_linear_head_with_batchnorm():
    head = create_head(HeadSpec(kind="linear", batchnorm=True), in_features=16, num_classes=5)
    assert isinstance(head[0], nn.BatchNorm1d) and isinstance(head[-1], nn.Linear)
    assert head(torch.randn(3, 16)).shape == (3, 5)


def test_spec_json_round_trip():
    spec = HeadSpec(kind="mlp", hidden=[64, 32], dropout=0.5, batchnorm=True)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d == {"kind": "mlp", "hidden": [64, 32], "dropout": 0.5, "batchnorm": True}
    assert HeadSpec.from_dict(d) == spec
    assert HeadSpec.from_dict(HeadSpec().to_dict()) == HeadSpec()


def test_default_hidden_is_not_shared():
    a, b = HeadSpec(), HeadSpec()
    a.hidden.append(3)
    assert b.hidden == [512]


def test_unknown_kind_lists_allowed_kinds():
    with pytest.raises(ValueError, match="'conv'.*linear, mlp"):
        create_head(HeadSpec(kind="conv"), in_features=16, num_classes=5)
