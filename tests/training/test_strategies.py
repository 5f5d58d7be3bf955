import pytest
import torch

from graft.models.backbones import create_backbone
from graft.models.classifier import GraftClassifier
from graft.training.strategies import (
    Phase,
    apply_phase,
    layer_groups,
    make_optimizer,
    parameter_groups,
    phase_of,
    plan_phases,
    resolve_rates,
    set_rates,
)


def model(name="tiny_cnn", **kwargs):
    torch.manual_seed(0)
    return GraftClassifier(create_backbone(name, in_channels=3, image_size=32, **kwargs), 4)


def test_phases():
    assert plan_phases("full", 5) == [Phase(0, 5, True)]
    assert plan_phases("linear_probe", 5) == [Phase(0, 5, False)]
    assert plan_phases("gradual_unfreeze", 5, freeze_epochs=2, unfrozen_lr_factor=0.5) == \
        [Phase(0, 2, False), Phase(1, 3, True, 0.5)]
    phases = plan_phases("gradual_unfreeze", 5, freeze_epochs=2)
    assert [phase_of(phases, e) for e in range(1, 6)] == \
        [(phases[0], 0), (phases[0], 1), (phases[1], 0), (phases[1], 1), (phases[1], 2)]
    with pytest.raises(ValueError, match="freeze_epochs"):
        plan_phases("gradual_unfreeze", 3, freeze_epochs=3)
    with pytest.raises(ValueError, match="gradual_unfreeze"):
        plan_phases("chaos", 3)


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "mobilenet_v3_small"])
def test_layer_groups_run_from_head_to_stem_with_falling_rates(name):
    m = model(name)
    groups = parameter_groups(m, weight_decay=0.01, layer_decay=0.5)
    names = [n for n, _ in layer_groups(m)]
    assert names[0] == "head" and names[-1] == "layer0"
    mults = {g["layer"]: g["lr_mult"] for g in groups}
    parts = {g["layer"]: g["part"] for g in groups}
    # The head and the backbone's top group each train at their own part's full rate; decay starts below.
    assert [mults[n] for n in names] == [1.0] + [0.5 ** i for i in range(len(names) - 1)]
    assert [parts[n] for n in names] == ["head"] + ["backbone"] * (len(names) - 1)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in m.parameters()) and len(set(grouped)) == len(grouped)


def test_frozen_parameters_stay_in_the_optimizer_but_do_not_move():
    m = model()
    apply_phase(m, Phase(0, 1, False))
    opt = make_optimizer(m, "adamw", 0.01, 0.9)
    for g in opt.param_groups:
        g["lr"] = 0.1
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).sum().backward()
    opt.step()
    after = m.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.") and "running" not in k
               and "num_batches" not in k)
    # Unfreezing flips requires_grad only: the optimizer (and its checkpointed state) keeps its groups.
    apply_phase(m, Phase(1, 1, True))
    assert all(p.requires_grad for p in m.parameters())


def test_sgd_without_momentum_is_plain_sgd():
    opt = make_optimizer(model(), "sgd", 0.0, 0.0)
    assert opt.param_groups[0]["nesterov"] is False


def test_auto_rates_follow_the_strategy_and_explicit_rates_win():
    # The head's default is the same for every strategy; the backbone's depends on it, and a frozen
    # backbone reports the head's rate rather than an unused number.
    assert resolve_rates("linear_probe", "auto", "auto") == (0.01, 0.01)
    assert resolve_rates("full", "auto", "auto") == (0.01, 0.001)
    assert resolve_rates("lp_ft", "auto", "auto") == (0.01, 0.001)
    assert resolve_rates("full", 0.02, "auto") == (0.02, 0.001)
    assert resolve_rates("full", "auto", 0.0003) == (0.01, 0.0003)


def test_set_rates_gives_head_and_backbone_their_own_peaks():
    m = model()
    opt = make_optimizer(m, "adamw", 0.01, 0.9, layer_decay=0.5)
    set_rates(opt, head_lr=0.01, backbone_lr=0.002, factor=0.5)
    rates = {g["layer"]: g["lr"] for g in opt.param_groups}
    assert rates["head"] == pytest.approx(0.005)
    assert [rates[f"layer{i}"] for i in (3, 2, 1, 0)] == pytest.approx([0.001, 0.0005, 0.00025, 0.000125])
