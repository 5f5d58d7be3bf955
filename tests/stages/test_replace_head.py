import pytest
import torch

from graft.files import read_json
from graft.models.io import ModelFileError, load_classifier
from graft.paths import Paths
from graft.stages import pretrain, replace_head


def test_new_head_for_target_classes_on_unchanged_backbone(stage_root, tiny_params):
    paths = Paths.at(stage_root)
    pretrain.run(tiny_params, paths)
    summary = replace_head.run(tiny_params, paths)
    model, meta = load_classifier(stage_root / "models/grafted.safetensors")
    assert summary["num_classes"] == 3 and model.num_classes == 3
    assert meta["classes"] == tiny_params.ingest.target.classes
    assert all(k.startswith("head.") for k in meta["head_parameters"])
    assert set(meta["head_parameters"]).isdisjoint(meta["backbone_parameters"])
    from safetensors.torch import load_file

    backbone = load_file(str(stage_root / "models/backbone.safetensors"))
    state = model.state_dict()
    for key, value in backbone.items():
        assert torch.equal(state[key], value), key
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    assert model(x).shape == (2, 3)


def test_missing_backbone_is_a_clear_error(stage_root, tiny_params):
    with pytest.raises(ModelFileError, match="run the pretrain stage first"):
        replace_head.run(tiny_params, Paths.at(stage_root))


def test_mlp_head(stage_root, tiny_params):
    paths = Paths.at(stage_root)
    pretrain.run(tiny_params, paths)
    params = tiny_params.model_copy(deep=True)
    params.replace_head.head.kind = "mlp"
    params.replace_head.head.hidden = [16]
    replace_head.run(params, paths)
    assert read_json(stage_root / "models/grafted.json")["head"]["kind"] == "mlp"
