"""resnet9: David Page's DAWNBench ResNet-9, the network of the FFCV CIFAR-10 example.

    prep    conv-bn-relu 64                                  32x32
    layer1  conv-bn-relu 128, max-pool 2, + residual(2 x conv-bn-relu 128)   16x16
    layer2  conv-bn-relu 256, max-pool 2                     8x8
    layer3  conv-bn-relu 512, max-pool 2, + residual(2 x conv-bn-relu 512)   4x4
    head    global max-pool, linear 512 -> classes (no bias), output * 0.125

The small output scale keeps initial logits near zero, so the softmax starts close to uniform
and the large learning rates of the one-cycle schedule do not saturate it in the first steps.
Convolutions keep PyTorch's default initialisation, as in the original.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpcifar.models.registry import register

_OUTPUT_SCALE = 0.125


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + branch(x) with an identity shortcut (channels and size unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(_conv_bn_relu(channels, channels),
                                    _conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


@register("resnet9")
class ResNet9(nn.Module):
    """Page's ResNet-9 (prep 64, layers 128/256/512, two residual blocks, global max-pool).

    Returns logits (N, num_classes), scaled by 0.125.
    """

    outputs_log_probs: bool = False

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.prep = _conv_bn_relu(3, 64)
        self.layer1 = nn.Sequential(_conv_bn_relu(64, 128), nn.MaxPool2d(2), Residual(128))
        self.layer2 = nn.Sequential(_conv_bn_relu(128, 256), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(_conv_bn_relu(256, 512), nn.MaxPool2d(2), Residual(512))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(512, num_classes, bias=False)
        self.output_scale = _OUTPUT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.linear(torch.flatten(self.pool(x), 1)) * self.output_scale
