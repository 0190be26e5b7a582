"""net5fc: five convolutions and a four-layer fully connected head (seed project 2, ~82%).

A classic "first CIFAR CNN" shape: channels widen 8 -> 32 -> 64 -> 128 -> 256 with two 2x2
max-pools (32 -> 16 -> 8), spatial Dropout2d after each pool, and a tapering MLP head of
256, 128, 64 and num_classes units. BatchNorm after each convolution keeps this plain chain
trainable at the learning rates the other models use.

Most parameters (about 4.2M of 4.4M) sit in the first fully connected layer, which sees the
whole 256 x 8 x 8 map; that is the design being reproduced, not an accident.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpcifar.models.registry import register

_CONV_CHANNELS = (8, 32, 64, 128, 256)
_FC_FEATURES = (256, 128, 64)
_POOL_AFTER = (1, 3)  # indices into _CONV_CHANNELS after which a max-pool halves the map
_SPATIAL_DROPOUT = 0.1  # Dropout2d drops whole channels: neighbouring pixels are correlated
_FC_DROPOUT = 0.3


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


@register("net5fc")
class Net5FC(nn.Module):
    """Five 3x3 conv layers, two max-pools, Dropout2d, and FC layers 256-128-64-classes.

    Returns logits (N, num_classes).
    """

    outputs_log_probs: bool = False

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for index, c_out in enumerate(_CONV_CHANNELS):
            layers += _conv_bn_relu(c_in, c_out)
            if index in _POOL_AFTER:
                layers += [nn.MaxPool2d(2), nn.Dropout2d(_SPATIAL_DROPOUT)]
            c_in = c_out
        self.features = nn.Sequential(*layers)

        side = 32 // 2 ** len(_POOL_AFTER)
        head: list[nn.Module] = [nn.Flatten()]
        f_in = _CONV_CHANNELS[-1] * side * side
        for f_out in _FC_FEATURES:
            head += [nn.Linear(f_in, f_out), nn.ReLU(inplace=True), nn.Dropout(_FC_DROPOUT)]
            f_in = f_out
        head.append(nn.Linear(f_in, num_classes))
        self.classifier = nn.Sequential(*head)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # He init for the ReLU layers; PyTorch's default Linear/Conv init is scaled for
        # leaky_relu(sqrt(5)) and shrinks activations through a deep MLP.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The output layer has no ReLU after it: start it small so the first predictions are
        # near uniform (loss ~ ln(num_classes)) instead of confidently random.
        nn.init.normal_(self.classifier[-1].weight, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
