"""The module that is exported: raw RGB uint8 images in, the model's output out.

The input is NHWC (N, 32, 32, 3) uint8, the layout of a decoded image file (PIL, OpenCV after
BGR->RGB, `np.asarray`), so a caller stacks images and feeds them, with no transpose and no
normalisation of its own: the checkpoint's mean and std (0..255 units) are constants inside the
graph. The batch dimension is dynamic.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

INPUT_NAME = "images"
INPUT_LAYOUT = "NHWC"
IMAGE_SHAPE = (32, 32, 3)


class RawImageModel(nn.Module):
    """uint8 (N, 32, 32, 3) RGB -> `model`((x - mean) / std) in NCHW float32."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        mean_t = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
        # (x - mean) / std as x * scale + shift, the training normaliser's arithmetic.
        self.register_buffer("scale", (1.0 / std_t).float())
        self.register_buffer("shift", (-mean_t / std_t).float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float()
        return self.model(x * self.scale + self.shift)


def output_name(model: nn.Module) -> str:
    """'log_probs' for a model whose output is log-probabilities (vgg8bn), else 'logits'."""
    return "log_probs" if getattr(model, "outputs_log_probs", False) else "logits"


def example_input(batch: int = 2) -> torch.Tensor:
    """A uint8 batch to trace with; 2, not 1, so that tracing does not specialise the batch
    dimension to the size 1 (torch.export treats sizes 0 and 1 as constants)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, *IMAGE_SHAPE), dtype=torch.uint8, generator=gen)
