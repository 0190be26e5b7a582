"""The wrap step: what a pure model from ddpcifar.models gets before it trains or evaluates.

BatchNorm overrides, the device and memory format, DDP and torch.compile, and the autocast
dtype. The models know none of these; checkpoints keep the unwrapped model's `state_dict`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


@dataclass(frozen=True)
class WrappedModel:
    """The nets built around one pure model; all share its parameters and buffers."""

    train: nn.Module  # what a training step calls: DDP and/or compiled
    eval: nn.Module  # what evaluation calls: compiled or plain, never DDP (see `wrap_model`)


def wrap_model(model: nn.Module, env: DistEnv, *, compile_mode: str | None) -> WrappedModel:
    """DDP and torch.compile around a pure model; checkpoints keep using `model`'s names.

    Training calls `compile(DDP(model))`: dynamo compiles the inner model and DDP's gradient
    hooks run around it (one graph per DDP bucket, so reduction still overlaps the backward).
    Evaluation calls the model without DDP, whose forward would broadcast BatchNorm buffers:
    a collective on every forward, which selective TTA (a different number of forwards on
    each rank) would hang on. With one rank both are the same compiled module.
    """
    train: nn.Module = model
    if env.distributed:
        train = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if compile_mode is None:
        return WrappedModel(train=train, eval=model)
    train = torch.compile(train, mode=compile_mode)
    return WrappedModel(train=train,
                        eval=torch.compile(model, mode=compile_mode) if env.distributed else train)


def broadcast_buffers(model: nn.Module, env: DistEnv) -> None:
    """Every rank takes rank 0's buffers (BatchNorm statistics); a collective.

    DDP broadcasts them at each training forward, after which every rank updates its own
    statistics from its own batch, so after a step they differ by rank. Evaluation calls the
    model without DDP (see `wrap_model`): this gives every rank the statistics rank 0 saves in
    its checkpoints, so a run's evaluation is the checkpoint's.
    """
    if env.distributed:
        with torch.no_grad():
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)


def warm_up(nets: WrappedModel, model: nn.Module, *, batch_size: int, eval_batch_size: int,
            image_shape: tuple[int, int, int], num_classes: int, amp_dtype: torch.dtype | None,
            device: torch.device, channels_last: bool) -> float:
    """Compile every graph a run meets, on random inputs, and put everything back; seconds taken.

    One training forward and backward (the backward graph compiles at its first call) and one
    evaluation forward with the batch dimension dynamic, so one graph serves every evaluation
    batch and every subset that selective TTA picks. The weights, BatchNorm statistics,
    gradients and the RNG (dropout) are restored, so the run is the one an eager run would
    make. Under DDP the backward reduces gradients: every rank must call this at the same point.
    The time is compilation plus one step's computation per graph (on CPU a second or two of
    a minute or more), and counts as the run's compile_s.
    """
    t0 = time.perf_counter()
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = dict(device_type=device.type, dtype=amp_dtype or torch.float32,
                    enabled=amp_dtype is not None)
    was_training = model.training

    images = torch.randn(batch_size, *image_shape, device=device).contiguous(
        memory_format=memory_format)
    labels = torch.randint(num_classes, (batch_size,), device=device)
    nets.train.train()
    with torch.autocast(**autocast):
        logits = nets.train(images)
    F.cross_entropy(logits.float(), labels).backward()
    for p in model.parameters():
        p.grad = None

    nets.eval.eval()
    images = torch.randn(max(eval_batch_size, 2), *image_shape, device=device).contiguous(
        memory_format=memory_format)
    torch._dynamo.maybe_mark_dynamic(images, 0)
    with torch.no_grad(), torch.autocast(**autocast):
        nets.eval(images)

    model.load_state_dict(saved)
    model.train(was_training)
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
