"""The wrap step: what a pure model from ddpcifar.models gets before it trains or evaluates.

BatchNorm overrides, the device and memory format, DDP and torch.compile, and the autocast
dtype. The models know none of these; checkpoints keep the unwrapped model's `state_dict`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ddpcifar.engine.distributed import DistEnv
from ddpcifar.models import build_model
from ddpcifar.spec import BatchNormConfig


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: `amp` as named, or for 'auto' bf16 on CPU and on CUDA GPUs with bf16
    (Ampere and later), fp16 on older GPUs; None for 'off'.

    bf16 has fp32's exponent range, so it needs no GradScaler, whose inf check is a host-device
    sync every step; fp16 (and its scaler) only where the GPU lacks bf16.
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def configure_batchnorm(model: nn.Module, cfg: BatchNormConfig) -> None:
    """Apply the spec's BatchNorm overrides to every BatchNorm layer (before DDP wraps the model)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if cfg.momentum is not None:
                m.momentum = cfg.momentum
            if cfg.eps is not None:
                m.eps = cfg.eps
            if not cfg.train_scale and m.weight is not None:
                with torch.no_grad():
                    m.weight.fill_(1.0)
                m.weight.requires_grad_(False)


def build_on_device(name: str, *, num_classes: int, batchnorm: BatchNormConfig,
                    device: torch.device, channels_last: bool) -> nn.Module:
    """Model `name` with the BatchNorm overrides, on `device` in the chosen memory format."""
    model = build_model(name, num_classes=num_classes)
    configure_batchnorm(model, batchnorm)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def wrap_model(model: nn.Module, env: DistEnv, *, compile: bool) -> nn.Module:
    """Apply DDP and torch.compile around a pure model; checkpoints keep using `model`."""
    net: nn.Module = model
    if env.distributed:
        net = DistributedDataParallel(
            net, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if compile:
        net = torch.compile(net)
    return net
