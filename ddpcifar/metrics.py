"""What an evaluation measured and the running training sums, for both engines.

Standard library only: the NumPy engine (ddpcifar.scratch, which must not import torch) and the
torch engine share these types, so `metrics()` means the same in metrics.jsonl, summary.json and
`python -m ddpcifar.evaluate --json` whichever engine wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, TypeVar

T = TypeVar("T")


@dataclass
class EvalResult:
    """Metrics of one pass over a labelled set, plus the samples it got wrong."""

    loss: float
    top1: float
    top3: float
    top5: float
    per_class: list[float]
    confusion: list[list[int]]
    count: int
    # (index, true, pred, confidence) of every misclassified sample, sorted by index.
    misclassified: list[tuple[int, int, int, float]] = field(default_factory=list)
    top1_tta: float | None = None  # with test-time augmentation, when it was computed
    tta: int = 0  # its level
    tta_images: int | None = None  # how many images got the augmented views (selective TTA)

    def metrics(self) -> dict[str, Any]:
        """The keys shared by metrics.jsonl, summary.json and `ddpcifar.evaluate --json`."""
        out = {"loss": self.loss, "top1": self.top1, "top3": self.top3, "top5": self.top5,
               "per_class": self.per_class, "confusion": self.confusion, "count": self.count}
        if self.top1_tta is not None:
            out.update(top1_tta=self.top1_tta, tta=self.tta)
        if self.tta_images is not None:
            out.update(tta_images=self.tta_images)
        return out


@dataclass
class RunningSums(Generic[T]):
    """Sums of loss x images, correct predictions and images over some training steps.

    The fields are floats (NumPy engine) or 0-d float64 tensors on the device (torch engine:
    `add` then queues kernels and never waits for the device; `tolist` and the means do).
    """

    loss: T
    correct: T
    count: T

    @classmethod
    def of(cls, values: Iterable[T]) -> "RunningSums[T]":
        """From three values in field order, e.g. what `tolist()` returned."""
        loss, correct, count = values
        return cls(loss, correct, count)

    def add(self, loss: Any, correct: Any, n: int) -> None:
        """One batch of `n` images: its mean loss and its number of correct predictions."""
        self.loss += loss * n
        self.correct += correct
        self.count += n

    def tolist(self) -> list[float]:
        return [float(self.loss), float(self.correct), float(self.count)]

    def mean_loss(self) -> float:
        return float(self.loss) / max(float(self.count), 1.0)

    def top1(self) -> float:
        return float(self.correct) / max(float(self.count), 1.0)

    def per_second(self, seconds: float) -> float:
        """Images per second, for sums gathered over `seconds`."""
        return float(self.count) / max(seconds, 1e-9)
