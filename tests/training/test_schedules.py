from itertools import pairwise

import pytest

from graft.training.schedules import ONE_CYCLE_DIV, lr_factor

STEPS = 100


def curve(schedule, warmup=0.25):
    return [lr_factor(schedule, s, STEPS, warmup) for s in range(STEPS)]


def test_constant():
    assert curve("constant") == [1.0] * STEPS


def test_cosine_falls_from_peak_to_zero():
    c = curve("cosine")
    assert c[0] == 1.0 and c[-1] < 1e-3 and all(a >= b for a, b in pairwise(c))
    assert c[50] == pytest.approx(0.5)


def test_one_cycle_warms_up_from_a_25th_then_anneals_far_below():
    c = curve("one_cycle", warmup=0.3)
    assert c[0] == pytest.approx(1 / ONE_CYCLE_DIV)
    assert max(c) == pytest.approx(1.0) and c.index(max(c)) == 30
    assert all(a <= b for a, b in pairwise(c[:31])) and all(a >= b for a, b in pairwise(c[30:]))
    assert c[-1] < 1e-3 and lr_factor("one_cycle", STEPS, STEPS, 0.3) == pytest.approx(1 / (25 * 1e4))


def test_one_cycle_starts_and_ends_where_torchs_one_cycle_lr_does():
    """What config.py says of one_cycle: torch's OneCycleLR defaults, from lr/25 towards lr/2.5e5."""
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=STEPS, pct_start=0.3)
    group = optimizer.param_groups[0]
    assert lr_factor("one_cycle", 0, STEPS, 0.3) == pytest.approx(group["initial_lr"]) == pytest.approx(1 / 25)
    assert lr_factor("one_cycle", STEPS, STEPS, 0.3) == pytest.approx(group["min_lr"]) == pytest.approx(1 / 2.5e5)


def test_warmup_cosine_rises_linearly_then_follows_cosine():
    c = curve("warmup_cosine", warmup=0.1)
    assert c[:10] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert c[10] == 1.0 and all(a >= b for a, b in pairwise(c[10:])) and c[-1] < 1e-3


def test_unknown_schedule_lists_the_choices():
    with pytest.raises(ValueError, match="one_cycle, warmup_cosine"):
        lr_factor("linear", 0, 10)
