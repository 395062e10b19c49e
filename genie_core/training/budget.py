"""A stage's time budget (``train.<stage>.minutes``): the step at which a time-boxed stage ends,
re-estimated as it trains from the measured step and evaluation times, so the learning-rate
schedule decays to its floor just as the budget runs out on whatever machine runs it.

Without a budget the horizon is ``train.<stage>.steps``, as it always was. With one, ``steps``
is a cap and the horizon is the last step that fits::

    remaining = budget - wall - one final evaluation and checkpoint
    horizon   = step + remaining / (seconds per step + evaluation / eval_every + checkpoint / save_every)

The step time is measured over this session's steps after its first ``WARM_STEPS`` (which wait
for torch.compile or warm caches); until ``MIN_SAMPLES`` steps are measured, a resumed session
estimates from the saved run's mean step time, a new one uses the cap. A time-boxed run's length
depends on the machine's speed, so two runs need not stop at the same step (nor does a resumed
run continue bit for bit); each step's batch and random draws stay a function of (seed, step, rank).

A stage records how it ended (``finished_by``: "budget" or "steps"), so ``--resume`` leaves a
stage that spent its budget alone unless the budget grows, and one that reached its steps alone
unless they grow.
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
    save_every: int
    end: int  # the current horizon: the schedule spans [0, end) and the stage stops at end
    eval_s: float = 0.0  # the last evaluation's wall time (0 until one has run)
    save_s: float = 0.0  # the last checkpoint's wall time
    _mark: tuple[int, float] | None = None  # (step, training time) the step time is measured from
    _session_start: int | None = None
    _saved_step_s: float = 0.0  # a resumed run's mean step time, until this session's is measured

    @classmethod
    def for_stage(cls, cap: int, minutes: float, eval_every: int, save_every: int) -> "Horizon":
        return cls(cap=cap, minutes=minutes, eval_every=eval_every, save_every=save_every, end=cap)

    @property
    def seconds(self) -> float:
        return 60.0 * self.minutes

    @property
    def timed(self) -> bool:
        return self.minutes > 0

    def finished_by(self, step: int) -> str | None:
        """How the stage ended at ``step``: "steps" (the cap), "budget", or None (not ended)."""
        if step >= self.cap:
            return "steps"
        return "budget" if self.timed and step >= self.end else None

    def state(self, step: int) -> dict:
        """What a checkpoint records for ``resumed``."""
        return {"minutes": self.minutes, "steps": self.cap, "horizon": self.end,
                "finished_by": self.finished_by(step), "eval_s": self.eval_s, "save_s": self.save_s}

    def resumed(self, step: int, elapsed: float, wall: float, saved: dict) -> None:
        """Start from a saved run (``state``'s keys in ``saved``; older runs lack them): a stage
        that spent its budget stays finished unless the budget grew; otherwise the horizon is
        estimated from the saved run's mean step and evaluation times."""
        if not self.timed:
            return  # the cap, as without budgets
        finished_budget = saved.get("finished_by") == "budget"
        if wall >= self.seconds or (finished_budget and self.minutes <= float(saved.get("minutes", 0.0))):
            self.end = min(self.cap, step)
            return
        self.eval_s = float(saved.get("eval_s", 0.0))
        self.save_s = float(saved.get("save_s", 0.0))
        self._saved_step_s = elapsed / step if step > 0 else 0.0
        self.end = self._estimate(step, wall, self._saved_step_s) if self._saved_step_s > 0 else self.cap

    def done(self, step: int) -> bool:
        return step >= self.end

    def _estimate(self, step: int, wall: float, step_s: float) -> int:
        per_step = step_s + self.eval_s / self.eval_every + self.save_s / self.save_every
        remaining = self.seconds - wall - self.eval_s - self.save_s
        more = math.floor(remaining / per_step) if per_step > 0 else self.cap
        return max(step, min(self.cap, step + max(0, more)))

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
        elif self._mark is not None and step - self._mark[0] >= MIN_SAMPLES:
            self.end = self._estimate(step, wall, (elapsed - self._mark[1]) / (step - self._mark[0]))
        elif self._saved_step_s > 0:
            self.end = self._estimate(step, wall, self._saved_step_s)
        return self.end
