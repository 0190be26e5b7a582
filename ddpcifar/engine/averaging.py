"""Weight averaging: lookahead and EMA over the model's floating-point state.

Both keep an average of every floating-point entry of the state dict (weights and BatchNorm
running statistics), updated every `every` steps from `start_epochs` on (the first update
copies the weights). Lookahead (as in airbench) then resets the live weights to the average,
and again at the end of every epoch; its decay ramps from 0 to decay**every over the run, as
(step / total)**power. EMA leaves the live weights alone and is swapped in for evaluation;
it replaces the weights after the last step. Every rank holds identical
weights and runs identical updates, so DDP stays in step without communication.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from ddpcifar.spec import AveragingConfig


class WeightAverage:
    def __init__(self, model: nn.Module, cfg: AveragingConfig, total_steps: int,
                 steps_per_epoch: int) -> None:
        self.model, self.cfg, self.total = model, cfg, max(total_steps, 1)
        # Updates count from the first step of epoch ceil(start_epochs) (airbench: `epoch >= 3`).
        self.start_step = math.ceil(cfg.start_epochs - 1e-9) * steps_per_epoch
        self.started = False
        self.average = {k: v.detach().clone() for k, v in self._floats().items()}

    def _floats(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update made after `step` optimizer steps."""
        base = self.cfg.decay ** self.cfg.every
        if self.cfg.kind == "lookahead":
            return base * (step / self.total) ** self.cfg.power
        return base

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number `step` (1-based); updates every `every` steps."""
        if step % self.cfg.every or step <= self.start_step:
            return
        live = self._floats()
        if not self.started:
            for key, avg in self.average.items():
                avg.copy_(live[key])
            self.started = True
            return
        decay = self.decay_at(step)
        for key, avg in self.average.items():
            avg.lerp_(live[key], 1 - decay)
            if self.cfg.kind == "lookahead":
                live[key].copy_(avg)

    @torch.no_grad()
    def end_of_epoch(self, final: bool) -> None:
        """Lookahead: the live weights become the average; EMA: the same after the last epoch."""
        if not self.started or (self.cfg.kind == "ema" and not final):
            return
        live = self._floats()
        for key, avg in self.average.items():
            live[key].copy_(avg)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """EMA: the average in the model for the duration (evaluation); lookahead: no change."""
        if self.cfg.kind != "ema" or not self.started:
            yield
            return
        live = self._floats()
        saved = {k: v.detach().clone() for k, v in live.items()}
        with torch.no_grad():
            for key, avg in self.average.items():
                live[key].copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for key, value in saved.items():
                    live[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.cfg.kind, "started": self.started,
                "average": {k: v.clone() for k, v in self.average.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.cfg.kind or set(state["average"]) != set(self.average):
            raise ValueError(f"averaging state of kind {state.get('kind')!r} does not fit "
                             f"train.averaging.kind={self.cfg.kind!r}")
        for key, value in state["average"].items():
            self.average[key].copy_(value)
        self.started = bool(state["started"])
