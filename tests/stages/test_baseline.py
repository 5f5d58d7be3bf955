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


def test_trains_as_finetune_does_but_everything_and_at_its_own_rate(stage_root, tiny_params):
    import csv

    params = tiny_params.model_copy(deep=True)
    params.finetune.strategy, params.finetune.layer_decay = "linear_probe", 0.5  # not the control's business
    params.finetune.schedule, params.finetune.augment.flip, params.finetune.keep = "constant", True, "best"
    baseline.run(params, Paths.at(stage_root))
    with open(stage_root / "plots/baseline.csv") as f:
        rows = list(csv.DictReader(f))
    model, meta = load_classifier(stage_root / "models/baseline.safetensors")
    for row in rows:
        assert int(row["trainable_params"]) == sum(p.numel() for p in model.parameters())
        assert float(row["lr_layer0"]) == float(row["lr_head"]) == params.baseline.lr
    best = max(rows, key=lambda r: (float(r["val_acc"]), -float(r["val_loss"])))
    assert meta["kept_epoch"] == int(best["epoch"])
