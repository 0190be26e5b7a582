"""Evaluation over a whole split, reduced across ranks so it equals a single-process evaluation.

Each rank sums its own counts over real samples only (FFCV's distributed padding repeats samples
to even out the ranks; those carry index -1 and are dropped), then one all_reduce adds them up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ddpcifar.engine.distributed import all_gather_objects, all_reduce_sum


@dataclass
class EvalResult:
    loss: float
    top1: float
    top3: float
    top5: float
    per_class: list[float]
    confusion: list[list[int]]
    count: int
    # (index, true, pred, confidence) of every misclassified sample, sorted by index.
    misclassified: list[tuple[int, int, int, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The keys shared by metrics.jsonl, summary.json and `ddpcifar.evaluate --json`."""
        return {"loss": self.loss, "top1": self.top1, "top3": self.top3, "top5": self.top5,
                "per_class": self.per_class, "confusion": self.confusion, "count": self.count}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_classes: int,
    amp_dtype: torch.dtype | None,
    device: torch.device,
) -> EvalResult:
    """Loss, top-1/3/5, per-class accuracy, confusion and misclassified samples of `model`."""
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, top1, top3, top5, count
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    wrong: list[torch.Tensor] = []
    for batch in batches:
        keep = batch.index >= 0
        images, labels, index = batch.images[keep], batch.labels[keep], batch.index[keep]
        if labels.numel() == 0:
            continue
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
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
    )
