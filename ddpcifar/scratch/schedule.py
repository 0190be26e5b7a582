"""Learning-rate schedules: small callables from optimizer step to learning rate."""

from __future__ import annotations

import math


class WarmupCosine:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to `final`.

    Warm-up matters without batch norm: a full learning rate on He-initialised weights can
    blow up in the first few hundred steps.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, final: float = 0.0):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps, total_steps >= 1: "
                             f"{warmup_steps}, {total_steps}")
        self.peak, self.total, self.warmup, self.final = peak, total_steps, warmup_steps, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        t = min(step - self.warmup, span) / span
        return self.final + (self.peak - self.final) * 0.5 * (1 + math.cos(math.pi * t))


class StepDecay:
    """`base` multiplied by `gamma` every `step_size` steps."""

    def __init__(self, base: float, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.base, self.step_size, self.gamma = base, step_size, gamma

    def __call__(self, step: int) -> float:
        return self.base * self.gamma ** (step // self.step_size)


class Constant:
    """The same learning rate at every step."""

    def __init__(self, value: float):
        self.value = value

    def __call__(self, step: int) -> float:
        return self.value
