"""vgg8bn: an eight-convolution VGG with BatchNorm and a log-softmax output (seed project 3, ~88%).

Four stages of two 3x3 conv -> BatchNorm -> ReLU units (64, 128, 256, 512 channels), each
stage closed by a 2x2 max-pool and dropout (32 -> 16 -> 8 -> 4 -> 2), then a fully connected
head on the 512 x 2 x 2 map.

The output is log-probabilities (`nn.LogSoftmax`), as in the seed project that trained it
with NLLLoss. The trainer applies cross-entropy to every model; that is still correct here
because cross-entropy is NLL of log_softmax(input), and log_softmax is idempotent:
log_softmax(log_softmax(z)) == log_softmax(z), since the rows of exp(log_softmax(z)) already
sum to 1 and the second normalisation subtracts log(1) = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpcifar.models.registry import register

_STAGES = (64, 128, 256, 512)
_CONV_DROPOUT = 0.1  # light, after each pool: BatchNorm already regularises the convs
_FC_WIDTH = 512
_FC_DROPOUT = 0.5


@register("vgg8bn")
class VGG8BN(nn.Module):
    """Eight 3x3 conv-BN-ReLU layers in four pooled pairs, FC head, log-softmax.

    Returns log-probabilities (N, num_classes): each row of exp(output) sums to 1.
    """

    outputs_log_probs: bool = True

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in _STAGES:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
            layers += [nn.MaxPool2d(2), nn.Dropout(_CONV_DROPOUT)]
        self.features = nn.Sequential(*layers)

        side = 32 // 2 ** len(_STAGES)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_STAGES[-1] * side * side, _FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Dropout(_FC_DROPOUT),
            nn.Linear(_FC_WIDTH, num_classes),
            nn.LogSoftmax(dim=1),
        )
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # He init for the ReLU convs (as torchvision's VGG); small normal init for the head.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
