"""Model facts computed from the code: trainable parameter count and receptive field.

The receptive field is found by running one forward pass with hooks, so it follows whatever
the model actually executes rather than a hand-maintained table.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_parameters", "receptive_field"]

# Layers that move the window over the image. AdaptiveAvgPool2d/AdaptiveMaxPool2d are left out
# on purpose: they are global heads, after which there is no spatial position left.
_SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable (requires_grad) scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _square(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    """The side of a square kernel/stride/dilation; non-square ones are not supported."""
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"receptive_field supports square {what} only, got {value} in {layer}")
    return int(value[0])


def _layer_geometry(layer: nn.Module) -> tuple[int, int, int]:
    """(kernel, stride, dilation) of a Conv2d, MaxPool2d or AvgPool2d."""
    if isinstance(layer, nn.Conv2d):
        return (_square(layer.kernel_size, "kernel", layer),
                _square(layer.stride, "stride", layer),
                _square(layer.dilation, "dilation", layer))
    kernel = _square(layer.kernel_size, "kernel", layer)
    # Pooling layers default their stride to the kernel size (stride=None is stored as kernel).
    stride = _square(layer.stride if layer.stride else layer.kernel_size, "stride", layer)
    dilation = _square(layer.dilation, "dilation", layer) if isinstance(layer, nn.MaxPool2d) else 1
    return kernel, stride, dilation


def receptive_field(model: nn.Module, input_size: int = 32) -> int:
    """Theoretical receptive field (pixels, one side) of one output unit of the last spatial layer.

    Runs one forward pass on a (1, 3, input_size, input_size) zero batch with forward hooks on
    every Conv2d, MaxPool2d and AvgPool2d, and folds them in execution order:
    ``k_eff = dilation*(k-1)+1; rf += (k_eff-1)*jump; jump *= stride`` starting at rf=1, jump=1.

    Chain assumption: the layers form a single path, so execution order is depth order. This is
    exact for plain chains, and also for residual blocks with identity shortcuts (the branch is
    the longest path and runs in order). It over-counts for parallel branches that are not
    nested (e.g. Inception-style). Layers that see a 1x1 map (after a global pool) add nothing,
    so for a global-pool head the result is the RF of the last spatial layer. Padding is
    ignored: this is the theoretical RF, which may exceed the image size.
    """
    geometry: list[tuple[int, int, int]] = []

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        height, width = inputs[0].shape[-2:]
        if height == 1 and width == 1:
            return  # past a global pool: no spatial extent left to grow
        geometry.append(_layer_geometry(layer))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, _SPATIAL_LAYERS)]
    was_training = model.training
    try:
        # eval + no_grad: the probe must not update BatchNorm running statistics.
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    rf, jump = 1, 1
    for kernel, stride, dilation in geometry:
        k_eff = dilation * (kernel - 1) + 1
        rf += (k_eff - 1) * jump
        jump *= stride
    return rf
