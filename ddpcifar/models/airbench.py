"""airbench: a small, fast net for time-to-accuracy, after the ideas of KellerJordan's airbench.

    stem    2x2 conv 3 -> 24, no padding, GELU                 32 -> 31
    block1  conv 64,  max-pool 2, BN, GELU, conv 64,  BN, GELU  31 -> 15
    block2  conv 256, max-pool 2, BN, GELU, conv 256, BN, GELU  15 -> 7
    block3  conv 256, max-pool 2, BN, GELU, conv 256, BN, GELU  7 -> 3
    head    global max-pool, linear 256 -> classes (no bias), output / 9

Pooling before BatchNorm makes the BN and GELU run on a quarter of the pixels. The 2x2 stem
has 24 = 2 x 12 filters so it can be set to a whitening transform of 2x2 patches (the spec's
`model.whitening`, see models/whitening.py); without it the stem is an ordinary trainable
convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpcifar.models.registry import register

_WIDTHS = (64, 256, 256)
_STEM_KERNEL = 2
_PATCH_DIM = 3 * _STEM_KERNEL * _STEM_KERNEL  # 12 values in a 2x2 RGB patch
_OUTPUT_SCALE = 1 / 9  # keeps initial logits small (a max-pooled head has large activations)


class ConvGroup(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.act = nn.GELU()
        # Airbench's init: the first c_in filters start as an identity (Dirac) map and the rest
        # stay random, so at step 0 each conv passes its input through (plus new random
        # features when it widens). A square conv therefore starts as the identity; its filters
        # still differ from each other, so there is no symmetry for training to break.
        for conv in (self.conv1, self.conv2):
            n_in = conv.in_channels
            with torch.no_grad():
                nn.init.dirac_(conv.weight[:n_in])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


@register("airbench")
class AirBench(nn.Module):
    """Fast three-block GELU net with a 2x2 stem and a scaled global-max-pool head.

    Returns logits (N, num_classes), scaled by 1/9.
    """

    outputs_log_probs: bool = False
    whitening_stem = "stem"  # models/whitening.py may set this conv from the data

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2 * _PATCH_DIM, _STEM_KERNEL, padding=0, bias=True)
        self.stem_act = nn.GELU()
        blocks, c_in = [], 2 * _PATCH_DIM
        for width in _WIDTHS:
            blocks.append(ConvGroup(c_in, width))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(c_in, num_classes, bias=False)
        self.output_scale = _OUTPUT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_act(self.stem(x)))
        return self.linear(torch.flatten(self.pool(x), 1)) * self.output_scale
