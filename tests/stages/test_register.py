import pytest
import torch
from mlflow.tracking import MlflowClient

from graft.data.dataset import ImageDataset
from graft.data.store import load_dataset, save_dataset
from graft.files import read_json
from graft.paths import Paths
from graft.stages import finetune, pretrain, register, replace_head
from graft.stages.register import decide
from graft.tracking import tracking_uri


@pytest.fixture
def finetuned(stage_root, tiny_params):
    paths = Paths.at(stage_root)
    for stage in (pretrain, replace_head, finetune):
        stage.run(tiny_params, paths)
    return paths


def test_first_model_becomes_champion_then_an_equal_one_stays_challenger(finetuned, tiny_params):
    first = register.run(tiny_params, finetuned)
    client = MlflowClient(tracking_uri(finetuned.root))
    name = tiny_params.tracking.model_name
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert read_json(finetuned.metric("register"))["reason"] == "no champion yet"
    assert first["challenger_acc"] >= 0

    # The same model again: same test examples, no discordant pairs, so no promotion.
    register.run(tiny_params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["version"] == "2" and decision["promote"] is False
    assert decision["previous_champion"] == "1" and decision["p_value"] == 1.0
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["graft.gate.promote"] == "False" and tags["graft.gate.test_hash"] == decision["test_hash"]


def test_champion_with_other_classes_is_not_compared(finetuned, tiny_params):
    register.run(tiny_params, finetuned)
    # New data renamed the target classes: the champion cannot be re-scored on the new test split.
    test_file = finetuned.prepared("target") / "test"
    test = load_dataset(test_file)
    save_dataset(test_file, ImageDataset(test.images, test.labels, [c + "_v2" for c in test.classes]))
    register.run(tiny_params, finetuned)
    decision = read_json(finetuned.metric("register"))
    assert decision["promote"] is False and "cannot be compared" in decision["reason"]
    client = MlflowClient(tracking_uri(finetuned.root))
    assert str(client.get_model_version_by_alias(tiny_params.tracking.model_name, "champion").version) == "1"


@pytest.mark.parametrize("challenger,champion,promote", [
    ([1] * 40 + [0] * 10, [0] * 40 + [1] * 10, True),     # clearly better
    ([1] * 25 + [0] * 25, [0] * 25 + [1] * 25, False),    # different mistakes, same accuracy
    ([1] * 26 + [0] * 24, [1] * 25 + [0] * 25, False),    # one example better: not significant
])
def test_decision_uses_paired_test(challenger, champion, promote):
    d = decide(torch.tensor(challenger, dtype=torch.bool), torch.tensor(champion, dtype=torch.bool), alpha=0.05)
    assert d["promote"] is promote
