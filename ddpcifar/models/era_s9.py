"""era_s9: a small all-convolutional CIFAR-10 net without max-pooling (seed project 1).

Target: 84.59% test accuracy with fewer than 200k parameters and a receptive field above 44
pixels. The ideas it reproduces:

- four blocks C1..C4; C1, C2 and C3 each *end* with a stride-2 3x3 convolution, which
  downsamples 32 -> 16 -> 8 -> 4 while still learning the reduction (no max-pool);
- one dilated 3x3 convolution (dilation 2, effective kernel 5) in C1 to grow the receptive
  field early for the price of a 3x3;
- depthwise-separable convolutions (depthwise 3x3 with groups=C, then pointwise 1x1) in C3
  and C4, where channels are wide and a full 3x3 would dominate the parameter budget;
- Conv -> BatchNorm -> ReLU -> small Dropout in every unit;
- a global-average-pool head and a 1x1 convolution to the classes.

Receptive field (computed by `ddpcifar.models.inspect.receptive_field`, asserted in tests):
C1 3, 7 (dilated), 9 (stride 2); C2 13, 17, 21 (stride 2); C3 29, 37, 45 (stride 2);
C4 61, 77.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpcifar.models.registry import register

# Channel widths per block: chosen so the whole net stays under 200k parameters.
_C1, _C2, _C3, _C4 = 32, 64, 64, 128
_DROPOUT = 0.05  # "small": enough to regularise a 200k net without slowing convergence much


def _conv_unit(
    c_in: int,
    c_out: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    separable: bool = False,
) -> nn.Sequential:
    """3x3 convolution (plain or depthwise-separable) -> BatchNorm -> ReLU -> Dropout.

    Padding equals the dilation so stride-1 units keep the spatial size. Convolutions have no
    bias because the following BatchNorm's shift makes it redundant.
    """
    if separable:
        conv: list[nn.Module] = [
            # depthwise: one 3x3 filter per input channel (groups == in_channels)
            nn.Conv2d(c_in, c_in, 3, stride=stride, padding=dilation, dilation=dilation,
                      groups=c_in, bias=False),
            # pointwise: mixes channels
            nn.Conv2d(c_in, c_out, 1, bias=False),
        ]
    else:
        conv = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation,
                          bias=False)]
    return nn.Sequential(*conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.Dropout(_DROPOUT))


@register("era_s9")
class EraS9(nn.Module):
    """Four-block stride-2 CNN with dilated and depthwise-separable convolutions.

    Returns logits (N, num_classes).
    """

    outputs_log_probs: bool = False

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Sequential(
            _conv_unit(3, 16),
            _conv_unit(16, _C1, dilation=2),
            _conv_unit(_C1, _C1, stride=2),  # 32 -> 16
        )
        self.c2 = nn.Sequential(
            _conv_unit(_C1, 48),
            _conv_unit(48, _C2),
            _conv_unit(_C2, _C2, stride=2),  # 16 -> 8
        )
        self.c3 = nn.Sequential(
            _conv_unit(_C2, _C3, separable=True),
            _conv_unit(_C3, _C3, separable=True),
            _conv_unit(_C3, _C3, stride=2),  # 8 -> 4; a full 3x3 so the block ends in one conv
        )
        self.c4 = nn.Sequential(
            _conv_unit(_C3, _C4, separable=True),
            _conv_unit(_C4, _C4, separable=True),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(_C4, num_classes, 1),  # a 1x1 conv on a 1x1 map is a linear layer
            nn.Flatten(),
        )
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # He init suits the ReLU units; BatchNorm keeps its default (weight 1, bias 0).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # The classifier has no ReLU after it, so He init (gain sqrt 2, and fan_out = 10 here)
        # would start confidently random. PyTorch's default (std 1/sqrt(3*fan_in)) starts near
        # uniform yet, unlike a tiny init, passes useful gradients to the body from step one.
        self.head[1].reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c4(self.c3(self.c2(self.c1(x)))))
