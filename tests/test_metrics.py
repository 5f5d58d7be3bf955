import pytest
import torch

from graft.metrics import classification_report, confusion_matrix, expected_calibration_error, mcnemar_one_sided


def test_confusion_and_report_on_a_known_case():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.tensor([[5., 0, 0], [0, 5., 0], [0, 5., 0], [0, 5., 0], [0, 0, 5.], [5., 0, 0]])
    cm = confusion_matrix(labels, logits.argmax(1), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    report = classification_report(logits, labels, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["recall"] == 1.0
    assert report["per_class"]["c"]["support"] == 2
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) / (5 / 3), 2 * 1 * 0.5 / 1.5]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)


def test_calibration_error_zero_when_confidence_matches_accuracy():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probs, torch.tensor([1, 0])) == pytest.approx(1.0)


def test_mcnemar_counts_only_discordant_pairs():
    a = torch.tensor([True] * 10 + [False] * 2)
    b = torch.tensor([False] * 10 + [True] * 2)
    r = mcnemar_one_sided(a, b)
    assert (r["challenger_only_correct"], r["champion_only_correct"]) == (10, 2)
    assert r["p_value"] == pytest.approx(79 / 4096)  # P(X >= 10), X ~ Bin(12, 1/2)
    assert mcnemar_one_sided(a, a)["p_value"] == 1.0
