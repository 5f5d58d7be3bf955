import pytest
import torch

from graft.files import read_json
from graft.models.io import load_classifier
from graft.paths import Paths
from graft.stages import finetune, pretrain, replace_head


@pytest.fixture
def grafted(stage_root, tiny_params):
    paths = Paths.at(stage_root)
    pretrain.run(tiny_params, paths)
    replace_head.run(tiny_params, paths)
    return paths


@pytest.mark.parametrize("strategy", ["full", "linear_probe"])
def test_strategies(grafted, tiny_params, strategy):
    params = tiny_params.model_copy(deep=True)
    params.finetune.strategy = strategy
    before, _ = load_classifier(grafted.model("grafted"))
    metrics = finetune.run(params, grafted)
    after, meta = load_classifier(grafted.model("finetuned"))
    assert meta["strategy"] == strategy and metrics["epochs"] == 2
    backbone_changed = any(not torch.equal(a, b) for (k, a), (_, b) in
                           zip(before.backbone.state_dict().items(), after.backbone.state_dict().items())
                           if "running" not in k and "num_batches" not in k)
    head_changed = any(not torch.equal(a, b) for a, b in zip(before.head.parameters(), after.head.parameters()))
    assert head_changed
    assert backbone_changed == (strategy == "full")
    history = read_json(grafted.metric("finetune"))
    assert history["strategy"] == strategy


def test_frozen_batchnorm_keeps_its_statistics_when_train_bn_is_false(grafted, tiny_params):
    params = tiny_params.model_copy(deep=True)
    params.finetune.strategy, params.finetune.train_bn = "linear_probe", False
    before, _ = load_classifier(grafted.model("grafted"))
    finetune.run(params, grafted)
    after, _ = load_classifier(grafted.model("finetuned"))
    stats = [k for k in before.state_dict() if "running_mean" in k]
    assert stats, "tiny_cnn has BatchNorm layers"
    for k in stats:
        assert torch.equal(before.state_dict()[k], after.state_dict()[k]), k
