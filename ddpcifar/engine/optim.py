"""Optimizers and per-step learning-rate schedules built from the spec."""

from __future__ import annotations

import math

import torch
from torch import nn

from ddpcifar.spec import OptimizerConfig, ScheduleConfig


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD or AdamW. Weight decay skips biases and norm parameters (1-d tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


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
    # A peak_epoch below 1 is a fraction of the run; otherwise it is an epoch number.
    peak_step = (cfg.peak_epoch * total_steps if cfg.peak_epoch < 1
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, cfg))
