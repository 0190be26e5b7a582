"""Learning-rate schedule shapes as pure functions of the step: shared by both engines.

Torch-free (the NumPy engine imports it), so a spec's schedule means the same in either engine.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddpcifar.spec import ScheduleConfig


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based) of `total_steps`.

    Warmup is linear from `start_factor` to 1 over `warmup_epochs`; the named shape runs over
    the remaining steps and ends at `final_factor`.
    """
    total_steps = max(total_steps, 1)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    if step < warmup:
        return cfg.start_factor + (1 - cfg.start_factor) * step / warmup
    rest = max(total_steps - warmup, 1)
    t = min((step - warmup) / rest, 1.0)  # progress after warmup, 0..1
    end = cfg.final_factor
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.name == "step":
        epoch = (step - warmup) // max(steps_per_epoch, 1)
        return cfg.gamma ** (epoch // cfg.step_epochs)
    # onecycle and triangular: rise from the warmup end to a peak, then fall to `end`.
    # A peak_epoch below 1 is a fraction of the run (rounded down to a whole step, as
    # airbench's int(0.23 * total)); otherwise it is an epoch number.
    peak_step = (math.floor(cfg.peak_epoch * total_steps) if cfg.peak_epoch < 1
                 else cfg.peak_epoch * steps_per_epoch)
    peak_t = min(max((peak_step - warmup) / rest, 0.0), 1.0)
    low = cfg.start_factor if warmup == 0 else 1.0
    if t < peak_t:
        u = t / peak_t
        rise = 0.5 * (1 - math.cos(math.pi * u)) if cfg.name == "onecycle" else u
        return low + (1 - low) * rise
    u = (t - peak_t) / max(1 - peak_t, 1e-12)
    fall = 0.5 * (1 + math.cos(math.pi * u)) if cfg.name == "onecycle" else 1 - u
    return end + (1 - end) * fall
