"""graft.sweep without Prefect: the grid, its validation, variant names, threads, the choice of the best."""

from __future__ import annotations

import pytest
import yaml

from graft.config import ConfigError
from graft.sweep import SweepError, best, format_table, parse_grid, plan, split_values, threads_per_variant
from tests.conftest import REPO


@pytest.fixture
def workspace(tmp_path):
    """plan() reads only params.yaml."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return tmp_path


def test_values_split_on_commas_outside_brackets():
    assert split_values("1e-3, 3e-4") == ["1e-3", "3e-4"]
    assert split_values("[128,64],[32]") == ["[128,64]", "[32]"]
    assert parse_grid(["finetune.lr=0.1,0.2", "seed=0"]) == {"finetune.lr": ["0.1", "0.2"], "seed": ["0"]}
    with pytest.raises(SweepError, match="given twice"):
        parse_grid(["finetune.lr=0.1", "finetune.lr=0.2"])
    with pytest.raises(SweepError, match="at least one -S"):
        parse_grid([])


def test_every_combination_validated_with_typed_values_and_readable_names(workspace):
    variants = plan(workspace, ["finetune.strategy=full,gradual_unfreeze", "finetune.lr=1e-3,3e-4",
                                "pretrain.lr=0.01"])
    assert len(variants) == 4
    first = variants[0]
    # 1e-3 is a string to YAML 1.1; the variant carries the float graft validated.
    assert first.settings == (("finetune.strategy", "full"), ("finetune.lr", 0.001), ("pretrain.lr", 0.01))
    assert first.name == "strategy=full,finetune.lr=0.001,pretrain.lr=0.01"  # two keys end in lr
    assert yaml.safe_load(first.overrides[1].split("=", 1)[1]) == 0.001
    assert [v.name for v in plan(workspace, ["finetune.lr=1e-05"])] == ["lr=1e-05"]
    assert yaml.safe_load(plan(workspace, ["finetune.lr=1e-05"])[0].overrides[0].split("=", 1)[1]) == 1e-05


def test_a_bad_variant_is_named_and_duplicates_refused(workspace):
    with pytest.raises(ConfigError, match=r"(?s)sweep variant finetune.lr=0.1, finetune.strategy=fast.*finetune.strategy = .fast."):
        plan(workspace, ["finetune.lr=0.1", "finetune.strategy=full,fast"])
    with pytest.raises(SweepError, match="variants 1 and 2 are the same"):
        plan(workspace, ["finetune.lr=0.001,1e-3"])


def test_threads_are_shared_out_between_concurrent_variants(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert threads_per_variant(0, 2) == 4
    assert threads_per_variant(2, 2) == 2
    assert threads_per_variant(8, 3) == 2
    assert threads_per_variant(4, 16) == 1


def test_the_best_is_chosen_on_validation_accuracy_not_test_accuracy():
    def result(n, val, test):
        return {"number": n, "name": f"v{n}", "val_acc": val, "test_acc": test, "baseline_test_acc": 0.2,
                "transfer_gain": 10.0, "seconds": 1.0, "ran": ["finetune"], "restored": []}

    results = [result(1, 0.5, 0.9), result(2, 0.7, 0.6), result(3, 0.7, 0.8),
               {"number": 4, "name": "v4", "error": "boom"}]
    assert best(results)["number"] == 2  # ties go to the earlier variant
    table = format_table(results, best(results))
    assert "2*" in table and "failed" in table and "best by validation accuracy" in table
