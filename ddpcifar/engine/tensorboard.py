"""TensorBoard event files: scalars each log step, hparams at the end, a misclassified grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class TensorBoardSink:
    """Rank 0's TensorBoard writer under `run_dir/tb`."""

    def __init__(self, log_dir: Path, *, purge_step: int | None = None) -> None:
        """`purge_step`: on resume, hide events at or after the checkpoint's step, which the
        resumed run logs again (otherwise TensorBoard shows the replayed stretch twice)."""
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, rank 0 only
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{prefix}/{key}", value, step)
        self._writer.flush()

    def misclassified(self, images: np.ndarray, step: int) -> None:
        """A grid of misclassified test images (N, H, W, 3) uint8."""
        if len(images) == 0:
            return
        import torch
        from torchvision.utils import make_grid
        grid = make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), nrow=10, padding=1)
        self._writer.add_image("eval/misclassified", grid, step)
        self._writer.flush()

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                 for k, v in hparams.items()}
        self._writer.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items()},
                                 run_name=".")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class NullTensorBoard:
    """Non-writing ranks (or tensorboard disabled)."""

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None: ...
    def misclassified(self, images: np.ndarray, step: int) -> None: ...
    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...
