"""Learning-rate schedules as pure functions of the step: the loop sets each group's rate from them.

A pure function of (step, steps) needs no scheduler state in a checkpoint: a resumed run recomputes
the same rate from the step it resumes at. Each training phase runs its own schedule (fastai's
fine_tune runs one fit_one_cycle per phase), so a phase restarts at step 0.
"""

from __future__ import annotations

import math

# torch's OneCycleLR defaults (div_factor 25, final_div_factor 1e4): start at lr/25, anneal towards
# lr/(25·1e4) = lr/2.5e5, reached at the end of the phase. fastai's fit_one_cycle starts at lr/25 too
# but ends at lr/1e5.
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL_DIV = 1e4


def _cos(start: float, end: float, t: float) -> float:
    """Cosine interpolation from start (t=0) to end (t=1)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def lr_factor(schedule: str, step: int, steps: int, warmup: float = 0.25) -> float:
    """The multiplier of the peak rate at `step` (0-based) of a phase of `steps` steps."""
    if steps <= 0:
        raise ValueError(f"a schedule needs at least one step, got {steps}")
    t = min(step, steps) / steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return _cos(1.0, 0.0, t)
    warm = warmup * steps
    if schedule == "warmup_cosine":
        if step < warm:
            return (step + 1) / (warm + 1)
        return _cos(1.0, 0.0, (step - warm) / max(steps - warm, 1))
    if schedule == "one_cycle":
        low, final = 1 / ONE_CYCLE_DIV, 1 / (ONE_CYCLE_DIV * ONE_CYCLE_FINAL_DIV)
        if step < warm:
            return _cos(low, 1.0, step / warm)
        return _cos(1.0, final, (step - warm) / max(steps - warm, 1))
    raise ValueError(f"unknown schedule {schedule!r}; allowed: cosine, constant, one_cycle, warmup_cosine")
