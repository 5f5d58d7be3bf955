import csv

import pytest

from graft.files import read_json
from graft.paths import Paths
from graft.stages import baseline, evaluate, finetune, pretrain, replace_head


@pytest.fixture
def trained(stage_root, tiny_params):
    paths = Paths.at(stage_root)
    for stage in (pretrain, replace_head, finetune, baseline):
        stage.run(tiny_params, paths)
    return paths


def test_metrics_and_confusion(trained, tiny_params):
    summary = evaluate.run(tiny_params, trained)
    metrics = read_json(trained.metric("evaluate"))
    for key in ("test_acc", "test_macro_f1", "test_ece", "baseline_test_acc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    expected_gain = 100 * (metrics["test_acc"] - metrics["baseline_test_acc"])
    assert metrics["transfer_gain"] == pytest.approx(expected_gain, abs=1e-3)
    # Per-class detail is a report beside the metrics, not a DVC metric (`dvc exp show` keeps to the headline).
    assert not {k for k in metrics if "per_class" in k} and all(not isinstance(v, dict) for v in metrics.values())
    report = read_json(trained.report("evaluate_per_class"))
    assert set(report) == {"finetuned", "baseline"}
    for model in report.values():
        assert set(model) == set(tiny_params.ingest.target.classes)
        assert sum(c["support"] for c in model.values()) == 24
    assert sum(c["recall"] * c["support"] for c in report["finetuned"].values()) / 24 == pytest.approx(
        metrics["test_acc"], abs=1e-5)
    assert metrics["test_examples"] == 24 == summary["test_examples"]
    with open(trained.plot("confusion")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24
    correct = sum(r["actual"] == r["predicted"] for r in rows)
    assert correct / 24 == pytest.approx(metrics["test_acc"], abs=1e-6)


def test_pictures_for_people(trained, tiny_params):
    evaluate.run(tiny_params, trained)
    for name in ("confusion.png", "learning_curves.png"):
        data = (trained.plots / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name


def test_the_better_model_is_chosen_on_validation_and_ties_go_to_the_fine_tuned_one():
    from graft.stages.evaluate import better_on_validation, verdict

    good, poor = {"acc": 0.9, "loss": 0.3}, {"acc": 0.6, "loss": 0.9}
    assert better_on_validation(good, poor) == "finetuned"
    assert better_on_validation(poor, good) == "scratch"
    assert better_on_validation({"acc": 0.9, "loss": 0.5}, {"acc": 0.9, "loss": 0.3}) == "scratch"  # loss breaks ties
    assert better_on_validation(good, dict(good)) == "finetuned"
    assert verdict("scratch", poor, good).startswith("negative transfer: the from-scratch control beats")
    assert "+30.0 points on validation" in verdict("finetuned", good, poor)


def test_a_tie_in_accuracy_is_said_as_a_tie_decided_by_the_loss():
    from graft.stages.evaluate import verdict

    finetuned, scratch = {"acc": 1 / 3, "loss": 1.2}, {"acc": 1 / 3, "loss": 1.1}
    said = verdict("scratch", finetuned, scratch)
    assert said == ("negative transfer: the from-scratch control ties on validation accuracy (33.3%) and has the "
                    "lower validation loss (1.100 against 1.200)")
    said = verdict("finetuned", scratch, finetuned)  # now the fine-tuned model has the lower loss
    assert said.startswith("transfer pays only in loss: the fine-tuned model ties") and "beats" not in said


def test_negative_transfer_is_said_plainly(trained, tiny_params):
    """A fine-tuned model that always answers one class loses to the control on validation."""
    from tests.stages.test_register import _constant_predictor

    _constant_predictor(trained.model("finetuned"), 0)
    summary = evaluate.run(tiny_params, trained)
    metrics = read_json(trained.metric("evaluate"))
    assert metrics["val_acc"] == pytest.approx(1 / 3) and metrics["baseline_val_acc"] > 1 / 3
    assert metrics["better_on_val"] == "scratch" and metrics["negative_transfer"] is True
    assert metrics["verdict"].startswith("negative transfer")
    assert summary["val_transfer_gain"] == pytest.approx(100 * (metrics["val_acc"] - metrics["baseline_val_acc"]),
                                                         abs=1e-3)
    assert metrics["val_examples"] == 12
