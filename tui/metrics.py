"""Following `metrics.jsonl` incrementally and turning it into curves (docs/run_directory.md).

`MetricsTail` reads only the bytes appended since the last call and holds back a half-written
last line until its newline arrives. `MetricsLog` accumulates parsed lines into columns;
`MetricsLog.curves()` freezes them into NumPy arrays for the charts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Read at most this much per call: a long log is shown progressively, chunk by chunk.
CHUNK_BYTES = 4 * 1024 * 1024


@dataclass
class TailResult:
    """What one `MetricsTail.read()` found."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # "line N: reason"
    missing: bool = False
    reset: bool = False  # the file shrank or was replaced: start over from byte 0
    more: bool = False  # stopped at CHUNK_BYTES: call read() again for the rest


class MetricsTail:
    """Incremental reader of one metrics.jsonl: remembers the byte offset and a partial line."""

    def __init__(self, path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.offset = 0
        self.line_no = 0
        self._partial = b""
        self._inode: int | None = None

    def read(self) -> TailResult:
        """Parse the complete lines appended since the previous call."""
        result = TailResult()
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            result.missing = True
            return result
        with fh:
            st = os.fstat(fh.fileno())
            if st.st_size < self.offset or (self._inode is not None and st.st_ino != self._inode):
                self.offset, self.line_no, self._partial = 0, 0, b""
                result.reset = True
            self._inode = st.st_ino
            fh.seek(self.offset)
            chunk = fh.read(self.chunk_bytes)
        self.offset += len(chunk)
        result.more = len(chunk) == self.chunk_bytes
        complete, newline, self._partial = (self._partial + chunk).rpartition(b"\n")
        if not newline:  # no complete line yet: everything is held back
            self._partial = complete + self._partial
            return result
        # Decoded once as a block (cheaper than per line); the held-back tail stays bytes, so
        # a multi-byte character split across reads is never decoded in halves.
        for raw in complete.decode("utf-8", "replace").split("\n"):
            self.line_no += 1
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as err:
                result.bad_lines.append(f"line {self.line_no}: not JSON ({str(err)[:60]})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
                result.bad_lines.append(f"line {self.line_no}: no 'kind'")
                continue
            result.records.append(record)
        return result

    def read_all(self) -> TailResult:
        """Everything available now, however many chunks that takes (for one-shot readers)."""
        total = TailResult()
        while True:
            part = self.read()
            total.missing = part.missing
            total.reset |= part.reset
            total.records += part.records
            total.bad_lines += part.bad_lines
            if not part.more:
                return total

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete last line held back."""
        return len(self._partial)


_NAN = float("nan")


def _f(v: Any) -> float:
    # type() instead of isinstance: bool is an int subclass and must not count as a number
    return float(v) if type(v) is float or type(v) is int else _NAN


@dataclass(frozen=True)
class Curves:
    """Immutable column arrays for one run's charts (NaN where a line lacked a value)."""

    train_epoch: np.ndarray
    train_step: np.ndarray
    train_loss: np.ndarray
    train_top1: np.ndarray
    lr: np.ndarray
    eval_epoch: np.ndarray
    eval_step: np.ndarray
    eval_loss: np.ndarray
    eval_top1: np.ndarray
    last_eval: dict[str, Any] | None
    lines: int

    @property
    def empty(self) -> bool:
        return len(self.train_step) == 0 and len(self.eval_step) == 0


class MetricsLog:
    """Columns accumulated from metrics records; unknown kinds and bad values are ignored."""

    _TRAIN = ("epoch", "step", "loss", "top1", "lr")
    _EVAL = ("epoch", "step", "loss", "top1")

    def __init__(self) -> None:
        self.train: dict[str, list[float]] = {k: [] for k in self._TRAIN}
        self.eval: dict[str, list[float]] = {k: [] for k in self._EVAL}
        self.last_eval: dict[str, Any] | None = None
        self.lines = 0

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        # Raw values are appended as they are (a list append per field); the conversion to
        # floats happens in curves(), vectorised. This loop runs once per line of the log.
        t_epoch, t_step, t_loss, t_top1, t_lr = (self.train[k] for k in self._TRAIN)
        e_epoch, e_step, e_loss, e_top1 = (self.eval[k] for k in self._EVAL)
        for rec in records:
            self.lines += 1
            values = rec.get("values")
            if not isinstance(values, dict):
                continue
            kind = rec["kind"]
            if kind == "train":
                t_epoch.append(rec.get("epoch"))
                t_step.append(rec.get("step"))
                t_loss.append(values.get("loss"))
                t_top1.append(values.get("top1"))
                t_lr.append(values.get("lr"))
            elif kind == "eval":
                e_epoch.append(rec.get("epoch"))
                e_step.append(rec.get("step"))
                e_loss.append(values.get("loss"))
                e_top1.append(values.get("top1"))
                self.last_eval = {"epoch": rec.get("epoch"), **values}

    def curves(self) -> Curves:
        """Freeze the columns into float arrays (a copy: the worker keeps appending)."""
        t = {k: _column(v) for k, v in self.train.items()}
        e = {k: _column(v) for k, v in self.eval.items()}
        return Curves(
            train_epoch=t["epoch"], train_step=t["step"], train_loss=t["loss"],
            train_top1=t["top1"], lr=t["lr"],
            eval_epoch=e["epoch"], eval_step=e["step"], eval_loss=e["loss"], eval_top1=e["top1"],
            last_eval=dict(self.last_eval) if self.last_eval else None, lines=self.lines,
        )


def _column(raw: list[Any]) -> np.ndarray:
    """Raw JSON values as float64: null becomes NaN; if any value is not a number at all
    (a string, a list), fall back to converting one by one, with NaN for the odd ones."""
    try:
        return np.asarray(raw, dtype=np.float64)  # fast path; None -> NaN
    except (TypeError, ValueError):
        return np.array([_f(v) for v in raw], dtype=np.float64)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average (weight 0 = raw), bias-corrected like TensorBoard's smoothing.

    NaNs are skipped (they keep their place but do not disturb the average).
    """
    if weight <= 0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values.tolist()):
        if v != v:  # NaN
            out[i] = v
            continue
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


@dataclass(frozen=True)
class Evaluation:
    """Per-class accuracy and confusion matrix of one evaluation."""

    epoch: int | None
    top1: float | None
    per_class: list[float]
    confusion: list[list[int]]
    source: str  # "metrics.jsonl" or "summary.json"
    top1_tta: float | None = None  # with test-time augmentation, when the run computed it


def latest_evaluation(last_eval: dict[str, Any] | None,
                      summary: dict[str, Any] | None) -> Evaluation | None:
    """The final evaluation from summary.json when present, else the last `eval` line."""
    final = summary.get("final") if isinstance(summary, dict) else None
    for values, source in ((final, "summary.json"), (last_eval, "metrics.jsonl")):
        if isinstance(values, dict) and isinstance(values.get("per_class"), list) \
                and isinstance(values.get("confusion"), list):
            epoch = values.get("epoch")
            top1, tta = values.get("top1"), values.get("top1_tta")
            try:
                return Evaluation(
                    epoch=int(epoch) if isinstance(epoch, (int, float)) else None,
                    top1=float(top1) if isinstance(top1, (int, float)) else None,
                    per_class=[float(v) for v in values["per_class"]],
                    confusion=[[int(c) for c in row] for row in values["confusion"]],
                    source=source,
                    top1_tta=float(tta) if isinstance(tta, (int, float)) else None,
                )
            except (TypeError, ValueError):
                continue  # malformed numbers: try the next source
    return None
