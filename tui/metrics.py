"""Following `metrics.jsonl` incrementally and turning it into curves (docs/run_directory.md).

`MetricsTail` reads only the bytes appended since the last call and holds back a half-written
last line until its newline arrives. `MetricsLog` accumulates parsed lines into columns;
`MetricsLog.curves()` hands out read-only NumPy views of them for the charts.
"""

from __future__ import annotations

import gc
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count, repeat
from json.scanner import make_scanner
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

# Read at most this much per call: a long log is shown progressively, chunk by chunk.
CHUNK_BYTES = 4 * 1024 * 1024
_JSON_SPACE = " \t\n\r"  # what json.loads skips around a value
# Lines parsed and added to the columns at a time: a block's dicts are still in the CPU cache
# when their fields are pulled out, and the next block reuses their memory (a third faster
# than whole 4 MB chunks).
_BLOCK_LINES = 1024


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector while a chunk is parsed.

    Parsing allocates a few containers per line, so the collector would run every few hundred
    lines and walk the block's live records each time, looking for cycles that freshly decoded
    JSON (a tree) cannot have; reference counting frees each block once its columns are taken.
    This saves about a tenth of the parse time. The switch is process-wide, so it is held for
    one chunk (tens of milliseconds) at a time and restored as it was found.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class TailResult:
    """What one `MetricsTail.read()` found."""

    records: list[dict[str, Any]] = field(default_factory=list)  # empty when read into a log
    count: int = 0  # records parsed
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
        # The scanner json.loads uses, without its per-call Python wrapper; one per tail, as it
        # keeps a key cache that another thread must not clear mid-parse.
        self._scan: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())

    def read(self, into: MetricsLog | None = None) -> TailResult:
        """Parse the complete lines appended since the previous call.

        With `into`, the records go straight into that log (emptied first when the file was
        reset) instead of `records`, and die before the garbage collector could walk them:
        the way to follow a long log.
        """
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
        if result.reset and into is not None:
            into.clear()
        complete, newline, self._partial = (self._partial + chunk).rpartition(b"\n")
        if not newline:  # no complete line yet: everything is held back
            self._partial = complete + self._partial
            return result
        # Decoded once as a block (cheaper than per line); the held-back tail stays bytes, so
        # a multi-byte character split across reads is never decoded in halves.
        lines = complete.decode("utf-8", "replace").split("\n")
        with _gc_paused():
            for start in range(0, len(lines), _BLOCK_LINES):
                records, bad = self._parse(lines[start:start + _BLOCK_LINES],
                                           self.line_no + start + 1)
                result.bad_lines += bad
                result.count += len(records)
                if into is None:
                    result.records += records
                else:
                    into.add(records)
                del records  # with `into`, freed now: cache-hot, collector off
        self.line_no += len(lines)
        return result

    def _parse(self, lines: list[str], first: int) -> tuple[list[dict[str, Any]], list[str]]:
        """The records of `lines` and a `line N: reason` for each bad one, exactly as parsing
        each line with `json.loads` would judge them, at a fraction of its cost.

        The C scanner behind `json.loads` is mapped over the lines, so no Python code runs per
        line; only a block holding a line that is blank, bad or padded with whitespace is then
        walked line by line, and only such lines are parsed again by `json.loads` itself (for
        its verdict and error message).
        """
        scanned = self._scan_lines(lines)
        if None not in scanned and list(map(itemgetter(1), scanned)) == list(map(len, lines)):
            records = list(map(itemgetter(0), scanned))
            if set(map(type, records)) <= {dict} \
                    and set(map(type, map(dict.get, records, repeat("kind")))) <= {str}:
                return records, []
        records, bad = [], []
        for no, raw, hit in zip(count(first), lines, scanned):
            if hit is not None and not raw[hit[1]:].strip(_JSON_SPACE):
                record = hit[0]
            elif not raw.strip():
                continue
            else:
                try:
                    record = json.loads(raw)
                except ValueError as err:
                    bad.append(f"line {no}: not JSON ({str(err)[:60]})")
                    continue
            if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
                bad.append(f"line {no}: no 'kind'")
                continue
            records.append(record)
        return records, bad

    def _scan_lines(self, lines: list[str]) -> list[tuple[Any, int] | None]:
        """Per line, (value, end) of the JSON value at its start, or None where none parses."""
        scanned: list[tuple[Any, int] | None] = []
        rest = iter(lines)  # map() below resumes after the line that stopped it
        while len(scanned) < len(lines):
            try:
                scanned.extend(map(self._scan, rest, repeat(0)))
            except Exception:  # noqa: BLE001 - json.loads judges this line again and says why
                scanned.append(None)
                continue
            if len(scanned) < len(lines):  # the scanner's StopIteration (no value) ended map()
                scanned.append(None)
        return scanned

    def read_all(self, into: MetricsLog | None = None) -> TailResult:
        """Everything available now, however many chunks that takes (for one-shot readers)."""
        total = TailResult()
        while True:
            part = self.read(into)
            total.missing = part.missing
            total.reset |= part.reset
            total.records += part.records
            total.count += part.count
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
    if type(v) is float or type(v) is int:
        try:
            return float(v)
        except OverflowError:  # an integer too long for a float
            return _NAN
    return _NAN


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


class _Column:
    """A float64 column that grows by doubling. A prefix handed out by `view()` never changes
    afterwards (appends write past it; a regrowth copies into a new buffer), so the UI can hold
    it while the worker keeps appending, without a copy per update."""

    def __init__(self) -> None:
        self._buf = np.empty(0, dtype=np.float64)
        self._n = 0

    def extend(self, values: np.ndarray) -> None:
        end = self._n + len(values)
        if end > len(self._buf):
            grown = np.empty(max(end, 2 * len(self._buf), 1024), dtype=np.float64)
            grown[:self._n] = self._buf[:self._n]
            self._buf = grown
        self._buf[self._n:end] = values
        self._n = end

    def view(self) -> np.ndarray:
        out = self._buf[:self._n]
        out.flags.writeable = False
        return out


class MetricsLog:
    """Columns accumulated from metrics records; unknown kinds and bad values are ignored."""

    _TRAIN = ("epoch", "step", "loss", "top1", "lr")
    _EVAL = ("epoch", "step", "loss", "top1")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Start over (the file was replaced); curves handed out before keep their data."""
        self.train: dict[str, _Column] = {k: _Column() for k in self._TRAIN}
        self.eval: dict[str, _Column] = {k: _Column() for k in self._EVAL}
        self.last_eval: dict[str, Any] | None = None
        self.lines = 0

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        """Append a batch of records (dicts with a string `kind`) to the columns."""
        self.lines += len(records)
        # One pass in Python per kind; the fields are then pulled out by map() in C.
        train = [r for r in records if r["kind"] == "train" and isinstance(r.get("values"), dict)]
        evals = [r for r in records if r["kind"] == "eval" and isinstance(r.get("values"), dict)]
        for kind_records, columns in ((train, self.train), (evals, self.eval)):
            if not kind_records:
                continue
            values = list(map(itemgetter("values"), kind_records))
            for key, column in columns.items():
                source = kind_records if key in ("epoch", "step") else values
                column.extend(_column(list(map(dict.get, source, repeat(key)))))
        if evals:
            last = evals[-1]
            self.last_eval = {"epoch": last.get("epoch"), **last["values"]}

    def curves(self) -> Curves:
        """The columns so far as read-only arrays (views: no copy, whatever the log's length)."""
        t = {k: c.view() for k, c in self.train.items()}
        e = {k: c.view() for k, c in self.eval.items()}
        return Curves(
            train_epoch=t["epoch"], train_step=t["step"], train_loss=t["loss"],
            train_top1=t["top1"], lr=t["lr"],
            eval_epoch=e["epoch"], eval_step=e["step"], eval_loss=e["loss"], eval_top1=e["top1"],
            last_eval=dict(self.last_eval) if self.last_eval else None, lines=self.lines,
        )


_NUMBER_TYPES = {float, int, type(None)}


def _column(raw: list[Any]) -> np.ndarray:
    """Raw JSON values as float64: null, and anything that is not a number (a string, a bool,
    a list), becomes NaN; the same answer whichever batch a value arrives in."""
    if set(map(type, raw)) <= _NUMBER_TYPES:
        try:
            return np.asarray(raw, dtype=np.float64)  # fast path; None -> NaN
        except OverflowError:  # an integer too long for a float: convert one by one
            pass
    return np.array([_f(v) for v in raw], dtype=np.float64)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average (weight 0 = raw), bias-corrected like TensorBoard's smoothing.

    NaNs are skipped (they keep their place but do not disturb the average). Vectorised: the
    recurrence acc = w*acc + (1-w)*v is summed in closed form within blocks short enough for
    w**-block to stay finite, and carried from block to block.
    """
    if weight <= 0 or len(values) == 0:
        return values
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    finite = ~np.isnan(values)
    v = values[finite]
    if len(v):
        out[finite] = _ema_sum(v, weight) / _ema_sum(np.ones_like(v), weight)
    return out


def _ema_sum(v: np.ndarray, w: float) -> np.ndarray:
    """acc[k] = w*acc[k-1] + (1-w)*v[k] with acc[-1] = 0, for 0 < w < 1."""
    # w**-(block-1) must stay far from overflow (and w**block from underflow) for the scaled
    # partial sums to keep full precision: about 1e260 at most.
    block = int(min(4096, max(1, 600 // -math.log(w)))) if w < 1 else 4096
    n = len(v)
    rows = -(-n // block)
    padded = np.zeros(rows * block)
    padded[:n] = v
    grid = padded.reshape(rows, block)
    j = np.arange(block)
    rise, fall = w ** -j.astype(np.float64), w ** j.astype(np.float64)
    # Within each block, starting from 0: (1-w) * sum_i w**(j-i) v[i]
    local = (1 - w) * np.cumsum(grid * rise, axis=1) * fall
    # Carry the value at the end of each block into the next: acc = local + w**(j+1) * carry
    carry = np.empty(rows)
    acc, decay = 0.0, w ** block
    for r, end in enumerate(local[:, -1].tolist()):
        carry[r] = acc
        acc = decay * acc + end
    acc_all = local + carry[:, None] * (fall * w)
    return acc_all.reshape(-1)[:n]


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
