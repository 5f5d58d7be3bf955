from graft.files import read_json
from graft.models.io import build_classifier, load_backbone_into
from graft.paths import Paths
from graft.stages import pretrain


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
