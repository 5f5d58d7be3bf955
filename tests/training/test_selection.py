"""Strategy `auto`'s machinery without a stage around it: the steps each strategy takes, the choice, the reuse."""

import pytest
import torch

from graft.data.store import load_dataset
from graft.models.io import load_classifier
from graft.training import selection
from graft.training.recipe import Recipe
from graft.training.selection import Candidate, choose, fresh_copies, select, steps_for


def candidate(name, val_acc, val_loss):
    row = {"epoch": 1, "val_acc": val_acc, "val_loss": val_loss, "train_acc": 1.0}
    return Candidate(name, [row], 1, False, {}, 0.0, 0.01, 0.001)


def test_choice_is_validation_accuracy_then_loss_then_order():
    probe, lp_ft, full = candidate("linear_probe", 0.8, 0.5), candidate("lp_ft", 0.9, 0.4), candidate("full", 0.9, 0.3)
    assert choose([probe, lp_ft, full]).name == "full"  # tied accuracy: the lower loss
    assert choose([probe, candidate("lp_ft", 0.7, 0.1)]).name == "linear_probe"  # accuracy first
    assert choose([candidate("a", 0.9, 0.3), candidate("b", 0.9, 0.3)]).name == "a"  # then the order given
    result = selection._reason(choose([probe, lp_ft, full]), [probe, lp_ft, full])
    assert "full had the best validation accuracy (90.0%" in result and "tied with lp_ft" in result


def test_lp_ft_is_a_probe_then_every_layer_at_the_backbone_rate():
    base = Recipe(epochs=3, lr=1.0)
    probe, tune = steps_for("lp_ft", base, "auto", "auto")
    assert (probe.label, probe.recipe.strategy, probe.recipe.lr) == ("linear_probe", "linear_probe", 0.01)
    assert (tune.label, tune.recipe.strategy, tune.recipe.lr, tune.recipe.backbone_lr) == ("lp_ft", "full", 0.001, 0.001)
    # Its probe is the same run as the linear_probe strategy's, so auto can train it once for both.
    assert repr(steps_for("linear_probe", base, "auto", "auto")[0]) == repr(probe)
    (full,) = steps_for("full", base, 0.02, 0.0005)
    assert (full.recipe.lr, full.recipe.backbone_lr) == (0.02, 0.0005)


def test_select_trains_the_shared_probe_once_and_keeps_the_best(grafted, monkeypatch):
    model, _ = load_classifier(grafted.model("grafted"))
    train, val = (load_dataset(grafted.prepared("target") / split) for split in ("train", "val"))
    fits = []
    real_fit = selection.fit

    def counting_fit(*args, **kwargs):
        fits.append(kwargs["stage"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(selection, "fit", counting_fit)
    seen, scopes = [], []
    result = select(fresh_copies(model), train, val, Recipe(epochs=2, lr=1.0, batch_size=32),
                    ["linear_probe", "lp_ft", "full"], "auto", "auto", seed=0, stage="finetune",
                    device=torch.device("cpu"), on_epoch=seen.append,
                    scope=lambda name, info: scopes.append((name, info)) or _null())
    assert fits == ["finetune.linear_probe", "finetune.lp_ft", "finetune.full"]
    assert [name for name, _ in scopes] == ["linear_probe", "lp_ft", "full"]
    assert scopes[1][1] == {"strategy": "lp_ft", "head_lr": 0.001, "backbone_lr": 0.001}
    probe, lp_ft, full = result.candidates
    assert [r["epoch"] for r in lp_ft.history] == [1, 2, 3, 4]
    assert lp_ft.history[:2] == probe.history  # the shared probe, numbered first
    assert [r["phase"] for r in lp_ft.history] == [0, 0, 1, 1]
    # Every candidate's epochs reach the callback, the replayed probe included: 2 + 4 + 2.
    assert [r["epoch"] for r in seen] == [1, 2, 1, 2, 3, 4, 1, 2]
    assert result.chosen is choose(result.candidates)
    assert result.chosen.state.keys() == model.state_dict().keys()
    # Each candidate started from the same grafted weights: the one passed in is untouched.
    assert all(torch.equal(v, load_classifier(grafted.model("grafted"))[0].state_dict()[k])
               for k, v in model.state_dict().items())


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_an_unknown_rate_key_is_refused_by_params(tiny_params):
    from graft.config import ConfigError, validate_params
    from tests.conftest import merge, tiny_params_dict

    with pytest.raises(ConfigError, match="finetune.backbone_lr"):
        validate_params(merge(tiny_params_dict(), {"finetune": {"backbone_lr": "fast"}}))
    with pytest.raises(ConfigError, match="candidates"):
        validate_params(merge(tiny_params_dict(), {"finetune": {"candidates": []}}))
