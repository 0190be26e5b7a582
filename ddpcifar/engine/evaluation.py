"""Evaluation over a whole split, reduced across ranks so it equals a single-process evaluation.

Each rank sums its own counts over real samples only (FFCV's distributed padding repeats samples
to even out the ranks; those carry index -1 and are dropped), then one all_reduce adds them up.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ddpcifar.engine.distributed import all_gather_objects, all_reduce_sum
from ddpcifar.metrics import EvalResult


def tta_logits(model: nn.Module, images: torch.Tensor, level: int, plain: torch.Tensor) -> torch.Tensor:
    """Test-time-augmented logits; `plain` = model(images), already computed.

    1: the mean of the image's and its mirror's logits. 2: half that, plus a quarter each of
    the same for the image shifted one pixel up-left and one down-right (reflect padding).
    """
    # Every view in the images' own memory format: a compiled model guards on the strides.
    memory_format = _memory_format(images)

    def mirrored(x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        base = model(x).float() if base is None else base
        flipped = x.flip(-1).contiguous(memory_format=memory_format)
        return 0.5 * (base + model(flipped).float())

    logits = mirrored(images, plain)
    if level < 2:
        return logits
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
    translated = [mirrored(x.contiguous(memory_format=memory_format)) for x in shifted]
    return 0.5 * logits + 0.25 * (translated[0] + translated[1])


def selective_tta_logits(model: nn.Module, images: torch.Tensor, level: int, plain: torch.Tensor,
                         threshold: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`tta_logits` for the images whose plain confidence (max softmax probability) is at most
    `threshold`, the plain logits for the others; and how many got the augmented views.

    None or 1.0: every image (the full batch, exactly `tta_logits`); a negative threshold: none.
    A confident prediction rarely changes under TTA, so its extra forward passes are skipped.
    """
    if threshold is None:
        return tta_logits(model, images, level, plain), torch.tensor(len(images))
    chosen = plain.softmax(1).amax(1) <= threshold
    count = chosen.sum()
    n = int(count)  # a host-device sync, once per batch: the subset's size decides the work
    if n == len(images):  # the same batch, not a copy: bitwise the full TTA
        return tta_logits(model, images, level, plain), count
    if n == 0:
        return plain, count
    subset, subset_plain = images[chosen], plain[chosen]
    if n == 1:  # two rows: a compiled model then keeps one graph for every subset size
        subset, subset_plain = subset.expand(2, -1, -1, -1), subset_plain.expand(2, -1)
    out = plain.clone()
    out[chosen] = tta_logits(model, subset.contiguous(memory_format=_memory_format(images)),
                             level, subset_plain)[:n]
    return out, count


def _memory_format(images: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if images.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_classes: int,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    tta: int = 0,
    tta_threshold: float | None = None,
) -> EvalResult:
    """Loss, top-1/3/5, per-class accuracy, confusion and misclassified samples of `model`.

    With `tta` > 0 also top-1 under test-time augmentation (`tta_logits`), for the images whose
    plain confidence is at most `tta_threshold` (None: all; `selective_tta_logits`); everything
    else is of the plain logits. `model` must not be DDP-wrapped: selective TTA makes a
    different number of forward passes on each rank, and DDP's forward broadcasts buffers.
    """
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    # loss, top1, top3, top5, count, top1 with TTA, images that got TTA
    sums = torch.zeros(7, dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    wrong: list[torch.Tensor] = []
    for batch in batches:
        keep = batch.index >= 0
        images, labels, index = batch.images[keep], batch.labels[keep], batch.index[keep]
        if labels.numel() == 0:
            continue
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(images).float()
            if tta:
                augmented, chosen = selective_tta_logits(model, images, tta, logits, tta_threshold)
                sums[5] += (augmented.argmax(1) == labels).sum()
                sums[6] += chosen
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        top = logits.topk(k, dim=1).indices
        hit = top == labels[:, None]
        sums[1] += hit[:, :1].any(1).sum()
        sums[2] += hit[:, :min(3, k)].any(1).sum()
        sums[3] += hit[:, :k].any(1).sum()
        sums[4] += labels.numel()
        pred = top[:, 0]
        confusion += torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2)
        miss = pred != labels
        if miss.any():
            conf = logits.softmax(1).gather(1, pred[:, None])[:, 0]
            wrong.append(torch.stack([index[miss].double(), labels[miss].double(),
                                      pred[miss].double(), conf[miss].double()], 1).cpu())
    if was_training:
        model.train()

    all_reduce_sum(sums)
    all_reduce_sum(confusion)
    mine = torch.cat(wrong).tolist() if wrong else []
    rows = sorted((int(i), int(t), int(p), float(c))
                  for part in all_gather_objects(mine) for i, t, p, c in part)

    count = int(sums[4].item())
    conf = confusion.view(num_classes, num_classes).cpu()
    per_class_total = conf.sum(1).clamp(min=1)
    return EvalResult(
        loss=float(sums[0] / max(count, 1)),
        top1=float(sums[1] / max(count, 1)),
        top3=float(sums[2] / max(count, 1)),
        top5=float(sums[3] / max(count, 1)),
        per_class=[float(x) for x in (conf.diag() / per_class_total)],
        confusion=conf.tolist(),
        count=count,
        misclassified=rows,
        top1_tta=float(sums[5] / max(count, 1)) if tta else None,
        tta=tta,
        tta_images=int(sums[6].item()) if tta else None,
    )
