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
    assert set(metrics["per_class"]) == set(tiny_params.ingest.target.classes)
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
