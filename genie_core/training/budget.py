"""A stage's time budget (``train.<stage>.minutes``): the step at which a time-boxed stage ends,
re-estimated as it trains from the measured step and evaluation times, so the learning-rate
schedule decays to its floor just as the budget runs out on whatever machine runs it.

Without a budget the horizon is ``train.<stage>.steps``, as it always was. With one, ``steps``
is a cap and the horizon is the last step that fits::

    remaining = budget - wall - one final evaluation
    horizon   = step + remaining / (seconds per step + seconds per evaluation / eval_every)

The step time is measured over this session's steps after its first ``WARM_STEPS`` (which wait
for torch.compile or warm caches); until ``MIN_SAMPLES`` steps are measured the horizon stays
where it was (the cap, or a resumed run's saved horizon). A time-boxed run's length depends on
the machine's speed, so two runs need not stop at the same step; each step's batch and random
draws stay a function of (seed, step, rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WARM_STEPS = 3  # steps of each session left out of the step time (compilation, first-touch costs)
MIN_SAMPLES = 5  # steps measured before the first estimate


@dataclass
class Horizon:
    """Where a stage's schedule ends. ``minutes`` 0: no budget, the horizon is ``cap``."""

    cap: int  # train.<stage>.steps
    minutes: float  # the budget; 0 for none
    eval_every: int
    end: int  # the current horizon: the schedule spans [0, end) and the stage stops at end
    eval_s: float = 0.0  # the last evaluation's wall time (0 until one has run)
    _mark: tuple[int, float] | None = None  # (step, training time) the step time is measured from
    _session_start: int | None = None

    @classmethod
    def for_stage(cls, cap: int, minutes: float, eval_every: int) -> "Horizon":
        return cls(cap=cap, minutes=minutes, eval_every=eval_every, end=cap)

    @property
    def seconds(self) -> float:
        return 60.0 * self.minutes

    @property
    def timed(self) -> bool:
        return self.minutes > 0

    def resumed(self, step: int, wall: float, saved: dict) -> None:
        """Start from a saved run: its horizon when it ran under the same budget, else the cap
        (or ``step`` when the budget is already spent)."""
        if not self.timed:
            return
        if wall >= self.seconds:
            self.end = step
        elif saved.get("minutes") == self.minutes and isinstance(saved.get("horizon"), int):
            self.end = max(step, min(self.cap, saved["horizon"]))
        else:
            self.end = self.cap

    def done(self, step: int) -> bool:
        return step >= self.end

    def update(self, step: int, elapsed: float, wall: float) -> int:
        """The horizon after ``step`` steps, ``elapsed`` seconds of training steps and ``wall``
        seconds in all (training, evaluations, checkpoints), summed over every session."""
        if not self.timed:
            return self.end
        if self._session_start is None:  # the first update of a session comes after its first step
            self._session_start = step - 1
        if self._mark is None and step - self._session_start >= WARM_STEPS:
            self._mark = (step, elapsed)
        if wall >= self.seconds:
            self.end = min(self.end, step)
            return self.end
        if self._mark is None or step - self._mark[0] < MIN_SAMPLES:
            return self.end
        per_step = (elapsed - self._mark[1]) / (step - self._mark[0])
        per_step += self.eval_s / self.eval_every
        remaining = self.seconds - wall - self.eval_s
        more = math.floor(remaining / per_step) if per_step > 0 else self.cap
        self.end = max(step, min(self.cap, step + max(0, more)))
        return self.end
