import math
import shutil

import pytest
import yaml

from graft.cli import main as graft
from graft.paths import Paths
from graft.training import lr_find
from tests.conftest import REPO, tiny_params_dict


def synthetic_curve():
    """Flat, then a descent between 1e-4 and 1e-2, then divergence."""
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        losses.append(2.0 if x < -4 else 2.0 - 1.5 * min(x + 4, 2) / 2 + (max(x + 2, 0) ** 2) * 3)
    return lrs, losses


def test_suggestions_land_in_the_descent():
    lrs, losses = synthetic_curve()
    for suggest in (lr_find.valley, lr_find.steep):
        assert 1e-4 <= suggest(lrs, losses) <= 1e-2, suggest.__name__
    assert lr_find.minimum(lrs, losses) == pytest.approx(1e-2 / 10, rel=0.2)


def test_range_test_suggests_a_rate_for_the_head_and_one_for_the_backbone(grafted, tiny_params, capsys):
    before = grafted.model("grafted").read_bytes()
    summary = lr_find.run(tiny_params, grafted, num_it=40, end_lr=100.0)
    assert set(summary) == {"lr", "backbone_lr"}
    for found in summary.values():
        assert 1e-7 <= found["suggestion"] <= 100 and found["steps"] <= 40
    # Every layer at rates up to 100 blows the loss up; the run stops there rather than go on.
    assert summary["backbone_lr"]["diverged"] is True and summary["backbone_lr"]["steps"] < 40
    for plot in (grafted.state / "lr_find.png", grafted.state / "lr_find_backbone.png"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "training the head alone" in out and "training every layer" in out
    assert "suggested finetune.lr" in out and "suggested finetune.backbone_lr" in out
    assert grafted.model("grafted").read_bytes() == before  # nothing but the plots is written


def test_cli(grafted):
    shutil.copy(REPO / "dvc.yaml", grafted.root / "dvc.yaml")
    (grafted.root / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    assert graft(["-C", str(grafted.root), "lr-find", "--num-it", "20", "--out", "lr.png"]) == 0
    assert (grafted.root / "lr.png").exists()


def test_needs_the_grafted_model(stage_root, tiny_params):
    with pytest.raises(FileNotFoundError, match="replace_head"):
        lr_find.run(tiny_params, Paths.at(stage_root), num_it=20)
