"""Progress inside an epoch: a bar with images/s and the time left when a terminal is watching, otherwise
a plain line at every tenth of the epoch (logs, CI, Prefect), once the epoch has run long enough for
anybody to wonder. Short epochs stay one line each (the loop's per-epoch line); the metrics are unchanged.

Reading the running loss back from the device waits for the step, so it is done only when something is
shown: every step for a bar (a person is watching), at each printed line otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

from graft.console import say

PARTS = 10               # a line at each tenth of the epoch...
QUIET_FOR_SECONDS = 10.0  # ...once this long has passed since the epoch began or the last line


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class EpochProgress:
    """Told after each step how many images this process has trained on and the running sums; shows it."""

    def __init__(self, label: str, total_images: int, *, terminal: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter, show: Callable[[str], None] = say,
                 quiet_for: float = QUIET_FOR_SECONDS):
        self.label, self.total = label, max(total_images, 1)
        self.clock, self.show, self.quiet_for = clock, show, quiet_for
        self.start = self.last_line = clock()
        self.next_part = 1  # counted in whole parts: a float sum of tenths misses 0.3
        self.bar = None
        if terminal if terminal is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_images, desc=label, leave=False, unit="img", unit_scale=True,
                            dynamic_ncols=True)

    def step(self, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.update(seen - self.bar.n)
            self.bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
            return
        if seen * PARTS < self.next_part * self.total or seen >= self.total:
            return  # the epoch's own line reports the end
        self.next_part = seen * PARTS // self.total + 1
        fraction = seen / self.total
        now = self.clock()
        if now - self.last_line < self.quiet_for:
            return
        self.last_line = now
        rate = seen / max(now - self.start, 1e-9)
        left = (self.total - seen) / rate
        self.show(f"{self.label}  {fraction:4.0%} ({seen:,}/{self.total:,} images)  "
                  f"loss {loss_sum.item() / seen:.3f} acc {correct.item() / seen:.3f}  "
                  f"{rate:.0f} img/s  ~{_duration(left)} left")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
