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
    def mirrored(x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        base = model(x).float() if base is None else base
        flipped = x.flip(-1).contiguous(memory_format=torch.channels_last)
        return 0.5 * (base + model(flipped).float())

    logits = mirrored(images, plain)
    if level < 2:
        return logits
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :h, :w], padded[:, :, 2:, 2:]]
    translated = [mirrored(x.contiguous(memory_format=torch.channels_last)) for x in shifted]
    return 0.5 * logits + 0.25 * (translated[0] + translated[1])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_classes: int,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    tta: int = 0,
) -> EvalResult:
    """Loss, top-1/3/5, per-class accuracy, confusion and misclassified samples of `model`.

    With `tta` > 0 also top-1 under test-time augmentation (`tta_logits`); everything else is
    of the plain logits.
    """
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(6, dtype=torch.float64, device=device)  # loss, top1, top3, top5, count, tta
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
                sums[5] += (tta_logits(model, images, tta, logits).argmax(1) == labels).sum()
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
    )
