import torch

from graft.files import read_json
from graft.models.io import load_classifier
from graft.paths import Paths
from graft.stages import baseline
from tests.conftest import swap_validation_labels


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

    paths = Paths.at(stage_root)
    swap_validation_labels(paths)  # so that the best epoch is not the last
    params = tiny_params.model_copy(deep=True)
    params.finetune.strategy, params.finetune.layer_decay = "linear_probe", 0.5  # not the control's business
    params.finetune.schedule, params.finetune.augment.flip, params.finetune.keep = "constant", True, "best"
    params.finetune.epochs = 4
    baseline.run(params, paths)
    with open(stage_root / "plots/baseline.csv") as f:
        rows = list(csv.DictReader(f))
    model, meta = load_classifier(stage_root / "models/baseline.safetensors")
    for row in rows:
        assert int(row["trainable_params"]) == sum(p.numel() for p in model.parameters())
        assert float(row["lr_layer0"]) == float(row["lr_head"]) == params.baseline.lr
    best = max(rows, key=lambda r: (float(r["val_acc"]), -float(r["val_loss"])))
    assert int(best["epoch"]) < int(rows[-1]["epoch"]) == 4, rows
    assert meta["kept_epoch"] == int(best["epoch"])

    # The written weights are the best epoch's: those of the same run stopped there (a constant rate takes the
    # same steps in a shorter run).
    params.finetune.epochs, params.finetune.keep = int(best["epoch"]), "last"
    baseline.run(params, paths)
    stopped, _ = load_classifier(stage_root / "models/baseline.safetensors")
    assert all(torch.equal(v, stopped.state_dict()[k]) for k, v in model.state_dict().items())
