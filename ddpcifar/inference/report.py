"""Predictions as a rich table, JSON or CSV.

Probabilities are the softmax of the model's output (its logits, or for vgg8bn its
log-probabilities, whose softmax is the same distribution), computed in float64. Ties keep the
class order. When the inputs carry labels (a prepared split), the top-1 accuracy over them is
reported too.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ddpcifar.inference.inputs import ImageInput


@dataclass(frozen=True)
class Prediction:
    """One input's top-k classes, largest probability first."""

    input: str
    top: list[tuple[str, float]]
    resized_from: tuple[int, int] | None = None
    label: str | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input}
        if self.label is not None:
            out["label"] = self.label
        out["resized_from"] = list(self.resized_from) if self.resized_from else None
        out["top"] = [{"class": c, "probability": p} for c, p in self.top]
        return out


def predictions(items: Sequence[ImageInput], logits: np.ndarray, classes: Sequence[str],
                k: int, resized_from: Sequence[tuple[int, int] | None]) -> list[Prediction]:
    """Top-`k` classes with probabilities for each input of a batch."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    order = np.argsort(-prob, axis=1, kind="stable")[:, :k]
    return [Prediction(item.name, [(classes[j], float(prob[i, j])) for j in order[i]],
                       resized, item.label)
            for i, (item, resized) in enumerate(zip(items, resized_from))]


def accuracy(preds: Sequence[Prediction]) -> tuple[int, float] | None:
    """(labelled count, top-1 over them), or None when no input has a label."""
    labelled = [p for p in preds if p.label is not None]
    if not labelled:
        return None
    return len(labelled), sum(p.top[0][0] == p.label for p in labelled) / len(labelled)


def to_json(preds: Sequence[Prediction], header: dict[str, Any]) -> str:
    """`header` (checkpoint, model, ...), `top1`/`labelled` when known, then `predictions`."""
    out = dict(header)
    acc = accuracy(preds)
    if acc is not None:
        out.update(labelled=acc[0], top1=acc[1])
    out["predictions"] = [p.record() for p in preds]
    return json.dumps(out, indent=2) + "\n"


def to_csv(preds: Sequence[Prediction], k: int) -> str:
    """One row per input: input, label, resized_from (WxH), then class_i, probability_i."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["input", "label", "resized_from",
                     *[f"{name}_{i}" for i in range(1, k + 1)
                       for name in ("class", "probability")]])
    for p in preds:
        size = f"{p.resized_from[0]}x{p.resized_from[1]}" if p.resized_from else ""
        writer.writerow([p.input, p.label or "", size,
                         *[v for c, prob in p.top for v in (c, f"{prob:.6f}")]])
    return buf.getvalue()


def print_table(preds: Sequence[Prediction], header: dict[str, Any], k: int) -> None:
    """A rich table on stdout: one row per input, a note for each resized image."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    epoch = "?" if header.get("epoch") is None else header["epoch"]
    tta = f", TTA {header['tta']}" if header.get("tta") else ""
    console.print(f"[bold]{header['model']}[/] epoch {epoch} from {header['checkpoint']} "
                  f"({header['device']}, amp {header['amp']}{tta}): {len(preds)} images")
    labelled = any(p.label is not None for p in preds)
    table = Table("input", *(["label"] if labelled else []),
                  *[f"top {i}" for i in range(1, k + 1)], "note")
    for p in preds:
        note = (f"resized from {p.resized_from[0]}x{p.resized_from[1]}"
                if p.resized_from else "")
        table.add_row(p.input, *([p.label or ""] if labelled else []),
                      *[f"{c} {prob:.1%}" for c, prob in p.top], note)
    console.print(table)
    acc = accuracy(preds)
    if acc is not None:
        console.print(f"top-1 against the labels: {acc[1]:.2%} of {acc[0]}")
