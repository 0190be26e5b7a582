"""What one NumPy run depends on, as plain data.

The run spec (ddpcifar.spec.RunSpec) is the one place where settings are validated, and it
refuses what this engine cannot honour. `ddpcifar.engine.numpy_runner.scratch_settings` copies
the validated spec into `ScratchSettings`, which checks nothing of its own: it only exists so
that this package needs no pydantic or torch (ddpcifar.spec imports the torch model registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ddpcifar.scratch.augment import Augment

if TYPE_CHECKING:
    from ddpcifar.spec import ScheduleConfig


@dataclass(frozen=True)
class ScratchSettings:
    """The spec's fields the NumPy trainer reads (names say which spec field each copies)."""

    epochs: int  # train.epochs
    batch_size: int  # train.global_batch_size (one process)
    seed: int  # train.seed: weights, validation split, data order, augmentation
    log_every: int  # train.log_every
    label_smoothing: float  # train.label_smoothing
    grad_clip: float | None  # train.grad_clip: global L2 norm of the loss gradient
    lr: float  # optimizer.lr (peak)
    momentum: float  # optimizer.momentum
    nesterov: bool  # optimizer.nesterov
    weight_decay: float  # optimizer.weight_decay (L2, weights only)
    # The spec's schedule section itself, read only by ddpcifar.schedule.lr_factor, so every
    # schedule (and schedule field) the torch engine has means the same here.
    schedule: ScheduleConfig
    augment: Augment  # augment.* (kind 'none': all zero)
    eval_batch_size: int  # eval.batch_size
    eval_every: int  # eval.every: evaluate every N epochs and after the last
    max_samples: int  # eval.max_samples: misclassified test images saved per evaluation
    save_best: bool  # checkpoint.save_best: keep checkpoints/scratch_best.npz
    val_size: float  # data.val_size: validation images held out (a count, or a fraction < 1)
    val_seed: int  # data.val_seed
    architecture: Sequence[dict[str, Any]]  # scratch.architecture (or the default network)
    dtype: str  # scratch.dtype
    blas_threads: int | None  # scratch.blas_threads
