"""Learning-rate schedules over a stream: cosine restarting every task (10% warm-up), the
meta-schedule whose peak decays across tasks, and inverse square root over the whole stream."""

from __future__ import annotations

import math

from emulate.common.errors import EmulateError

SCHEDULES = ("restart", "meta", "rsqrt")
WARMUP_FRACTION = 0.1


class ScheduleError(EmulateError, ValueError):
    """An unknown schedule name."""


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return name


def warmup_steps(steps: int) -> int:
    return max(1, round(WARMUP_FRACTION * steps))


def meta_peak(task: int, steps: int, warmup: int, peak: float, floor: float) -> float:
    """The peak of task ``task`` (0-based) under the meta-schedule: cosine-decayed across tasks,
    1, 0.50, 0.25, 0.147, ... of the base for long tasks."""
    span = max(1, steps - warmup)
    angle = math.pi * (task * span + 1) / ((task + 1) * span)
    return floor + 0.5 * (1 + math.cos(angle)) * (peak - floor)


def cosine(step: int, steps: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to ``peak``, then cosine down to ``floor`` at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return floor + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (peak - floor)


def learning_rate(
    schedule: str, task: int, step: int, steps: int, peak: float, floor: float = 0.0
) -> float:
    """The rate at ``step`` of ``steps`` in task ``task``."""
    warmup = warmup_steps(steps)
    if schedule == "restart":
        return cosine(step, steps, warmup, peak, floor)
    if schedule == "meta":
        return cosine(step, steps, warmup, meta_peak(task, steps, warmup, peak, floor), floor)
    if schedule == "rsqrt":  # one warm-up at the stream's start, then peak * sqrt(W / t)
        t = task * steps + step + 1
        return peak * min(t / warmup, math.sqrt(warmup / t))
    raise ScheduleError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
