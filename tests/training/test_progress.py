"""Progress inside an epoch when no terminal is watching: a line per tenth of the epoch, once it runs long."""

from __future__ import annotations

import torch

from graft.training.progress import EpochProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_epoch(seconds_per_step: float, steps: int = 20, batch: int = 50) -> list[str]:
    clock, lines = Clock(), []
    shown = EpochProgress("pretrain: epoch 1/3", steps * batch, terminal=False, clock=clock, show=lines.append)
    for step in range(1, steps + 1):
        clock.now += seconds_per_step
        seen = step * batch
        shown.step(seen, torch.tensor(0.5 * seen, dtype=torch.float64), torch.tensor(seen // 4))
    shown.close()
    return lines


def test_a_long_epoch_says_how_far_it_is_and_how_long_is_left():
    lines = run_epoch(seconds_per_step=6.0)  # 2 min in all: a line at each tenth, the end left to the epoch's line
    assert len(lines) == 9
    assert lines[0] == ("pretrain: epoch 1/3   10% (100/1,000 images)  loss 0.500 acc 0.250  8 img/s  ~1 min 48 s left")
    assert lines[-1].startswith("pretrain: epoch 1/3   90% (900/1,000 images)") and lines[-1].endswith("~12 s left")


def test_a_short_epoch_prints_nothing_extra():
    assert run_epoch(seconds_per_step=0.05) == []  # one second in all: the epoch's own line is enough


def test_lines_are_spaced_in_time_not_only_by_fraction():
    # 3 s per step: a tenth of the epoch is 6 s, but lines wait 10 s, so every other tenth is skipped.
    lines = run_epoch(seconds_per_step=3.0)
    assert [line.split()[3] for line in lines] == ["20%", "40%", "60%", "80%"]
