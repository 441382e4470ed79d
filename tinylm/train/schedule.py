"""Learning-rate schedules as pure functions of the step (so a resumed run needs no state).

- cosine: linear warmup to the peak, cosine decay to min_lr_ratio * peak at the last step.
- wsd: warmup-stable-decay (Hu et al. 2024, MiniCPM): linear warmup, a flat stretch at the
  peak, then a linear decay over the final `decay_frac` of training to min_lr_ratio * peak.
- constant: warmup, then the peak.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, peak: float, total: int, warmup: int, schedule: str,
          min_lr_ratio: float = 0.1, decay_frac: float = 0.2) -> float:
    floor = peak * min_lr_ratio
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, int(round(total * decay_frac)))
        decay_start = total - decay_steps
        if step < decay_start:
            return peak
        progress = min(1.0, (step - decay_start) / decay_steps)
        return peak + (floor - peak) * progress
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine, wsd or constant")


SCHEDULES = ("cosine", "wsd", "constant")
