from graft.files import read_json
from graft.models.io import load_classifier
from graft.paths import Paths
from graft.stages import baseline


def test_trains_same_architecture_from_scratch(stage_root, tiny_params):
    metrics = baseline.run(tiny_params, Paths.at(stage_root))
    model, meta = load_classifier(stage_root / "models/baseline.safetensors")
    assert meta["architecture"]["backbone"] == tiny_params.model.backbone
    assert meta["strategy"] == "from_scratch" and model.num_classes == 3
    assert metrics["epochs"] == tiny_params.finetune.epochs  # fine-tuning's epochs
    rows = (stage_root / "plots/baseline.csv").read_text().splitlines()
    assert len(rows) == 1 + tiny_params.finetune.epochs
    assert read_json(stage_root / "metrics/baseline.json")["epochs"] == tiny_params.finetune.epochs
