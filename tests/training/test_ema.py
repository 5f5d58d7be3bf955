import pytest
import torch
from torch import nn

from graft.training.ema import WeightEma


def test_average_follows_with_warmup_and_round_trips():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = WeightEma(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay warms up: min(0.9, 2/11)
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        ema.update(model)
    assert ema.module.weight.item() == pytest.approx(1.0, abs=1e-6)
    other = WeightEma(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 201 and torch.equal(other.module.weight, ema.module.weight)


def test_decay_must_be_a_fraction():
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEma(nn.Linear(1, 1), decay=1.0)
