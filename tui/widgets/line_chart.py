"""A small braille line chart: each terminal cell holds 2x4 dots, so a 40x12 cell plot has 80x48 dots.

Deterministic (no timing, no randomness), so it snapshots cleanly. Large series are first
decimated to the plot's dot columns, keeping each column's first, lowest, highest and last point
(`envelope`), then rasterised column by column (min..max span per dot column, joined to the next
column): the dots a polyline through every point would cover, at O(n) cost for a million points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

# Bit of each dot inside a braille cell, indexed [row 0..3][column 0..1] (Unicode order).
_BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint8)
_AXIS_W = 7  # characters reserved for the y-axis labels


@dataclass(frozen=True)
class Series:
    """One line: x and y arrays of equal length (NaNs are skipped) and a colour."""

    label: str
    x: np.ndarray
    y: np.ndarray
    color: str
    points: bool = False  # a scatter: each point a small mark, no line between them


def fmt_tick(value: float) -> str:
    """A compact axis label (at most 6 characters)."""
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 1e5 or mag < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    if mag >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _finite(v: np.ndarray) -> np.ndarray:
    ok = np.isfinite(v)
    return v if ok.all() else v[ok]  # no copy of a clean million-point series


def _limits(values: list[np.ndarray], pad: float) -> tuple[float, float] | None:
    finite = [_finite(np.asarray(v, float)) for v in values]
    finite = [v for v in finite if len(v)]
    if not finite:
        return None
    lo = min(float(v.min()) for v in finite)
    hi = max(float(v.max()) for v in finite)
    if hi == lo:
        spread = abs(hi) * 0.1 or 1.0
        return lo - spread, hi + spread
    margin = (hi - lo) * pad
    # Do not pad non-negative data (losses, accuracies, learning rates) below zero.
    return (max(lo - margin, 0.0) if lo >= 0 else lo - margin), hi + margin


def _line(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Dots of the straight segment between two dots (inclusive)."""
    n = max(abs(x1 - x0), abs(y1 - y0)) + 1
    return (np.rint(np.linspace(x0, x1, n)).astype(np.int64),
            np.rint(np.linspace(y0, y1, n)).astype(np.int64))


def _dot_columns(x: np.ndarray, xlim: tuple[float, float], width: int) -> np.ndarray:
    px = np.rint((x - xlim[0]) / (xlim[1] - xlim[0]) * (width - 1)).astype(np.int64)
    return np.clip(px, 0, width - 1)


def envelope(x: np.ndarray, y: np.ndarray, xlim: tuple[float, float],
             width: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) decimated to at most four points per dot column of a `width`-dot plot over `xlim`.

    Each column keeps its first, lowest, highest and last point, in their original order, so
    every window's minimum and maximum (a spike) survives, and `rasterise` draws exactly the
    same dots from these points as from all of them. Points with a NaN or infinite coordinate
    are dropped, as `rasterise` would.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.all():
        x, y = x[ok], y[ok]
    if len(x) <= 4 * width:
        return x, y
    px = _dot_columns(x, xlim, width)
    order = None
    if not (px[1:] >= px[:-1]).all():  # x not sorted (rare): group the columns, stably
        order = np.argsort(px, kind="stable")
        px = px[order]
    ys = y if order is None else y[order]
    starts = np.searchsorted(px, np.arange(width + 1)).tolist()  # column c: starts[c:c+2]
    keep: list[int] = []
    for lo, hi in zip(starts[:-1], starts[1:]):
        if lo < hi:
            window = ys[lo:hi]
            keep += sorted({lo, lo + int(window.argmin()), lo + int(window.argmax()), hi - 1})
    idx = np.array(keep, dtype=np.int64)
    if order is not None:
        idx = order[idx]
    return x[idx], y[idx]


def scatter(x: np.ndarray, y: np.ndarray, xlim: tuple[float, float],
            ylim: tuple[float, float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Dot coordinates of a small plus at every finite point (py=0 at the top)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    px = _dot_columns(x[ok], xlim, width)
    py = np.clip(np.rint((ylim[1] - y[ok]) / (ylim[1] - ylim[0]) * (height - 1)).astype(np.int64),
                 0, height - 1)
    dx, dy = np.array([0, -1, 1, 0, 0]), np.array([0, 0, 0, -1, 1])
    return (np.clip((px[:, None] + dx).ravel(), 0, width - 1),
            np.clip((py[:, None] + dy).ravel(), 0, height - 1))


def rasterise(x: np.ndarray, y: np.ndarray, xlim: tuple[float, float],
              ylim: tuple[float, float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Dot coordinates (px, py; py=0 at the top) covered by the polyline through (x, y)."""
    x, y = envelope(x, y, xlim, width)
    if len(x) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    px = _dot_columns(x, xlim, width)
    py = np.rint((ylim[1] - y) / (ylim[1] - ylim[0]) * (height - 1)).astype(np.int64)
    py = np.clip(py, 0, height - 1)
    if len(px) == 1:  # a lone point (one evaluation so far): a small plus, not one dot
        cx = np.clip(px[0] + np.array([0, -1, 1, 0, 0]), 0, width - 1)
        cy = np.clip(py[0] + np.array([0, 0, 0, -1, 1]), 0, height - 1)
        return cx, cy
    # Per dot column: the first, last, lowest and highest dot the polyline visits there.
    order = np.argsort(px, kind="stable")
    px, py = px[order], py[order]
    cols, first = np.unique(px, return_index=True)
    last = np.r_[first[1:], len(px)] - 1
    lo = np.minimum.reduceat(py, first)
    hi = np.maximum.reduceat(py, first)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for i, c in enumerate(cols.tolist()):
        span = np.arange(lo[i], hi[i] + 1)
        xs.append(np.full(len(span), c))
        ys.append(span)
        if i:  # join the previous column's last dot to this column's first
            lx, ly = _line(cols[i - 1], py[last[i - 1]], c, py[first[i]])
            xs.append(lx)
            ys.append(ly)
    return np.concatenate(xs), np.concatenate(ys)


class LineChart(Widget):
    """Line chart of one or more `Series`, with y labels on the left and x labels below."""

    def __init__(self, *, y_format: Callable[[float], str] = fmt_tick, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._series: list[Series] = []
        self._y_format = y_format
        self._lines: list[Strip] | None = None
        self.empty_text = "no data yet"

    @property
    def series(self) -> list[Series]:
        return list(self._series)

    @property
    def drawn(self) -> bool:
        """Whether the current series have been rasterised (they are on screen once painted)."""
        return self._lines is not None

    def set_series(self, series: Sequence[Series]) -> None:
        """Replace the plotted lines and redraw."""
        self._series = list(series)
        self._lines = None
        self.refresh()

    def on_resize(self) -> None:
        self._lines = None

    def render_line(self, y: int) -> Strip:
        if self._lines is None or len(self._lines) != self.size.height:
            self._lines = self._render_lines(self.size.width, self.size.height)
        return self._lines[y] if y < len(self._lines) else Strip.blank(self.size.width)

    def _render_lines(self, width: int, height: int) -> list[Strip]:
        base = self.rich_style
        axis = Style(color="grey50") + Style(bgcolor=base.bgcolor)
        plot_w, plot_h = width - _AXIS_W - 1, height - 1
        xlim = _limits([s.x for s in self._series], 0.0)
        ylim = _limits([s.y for s in self._series], 0.05)
        if plot_w < 4 or plot_h < 2 or xlim is None or ylim is None:
            blank = [Strip.blank(width, base) for _ in range(height)]
            if height:
                text = self.empty_text[:width].center(width)
                blank[height // 2] = Strip([Segment(text, axis)], width)
            return blank
        dots_w, dots_h = plot_w * 2, plot_h * 4
        bits = np.zeros((plot_h, plot_w), dtype=np.uint8)
        owner = np.full((plot_h, plot_w), -1, dtype=np.int64)
        for i, s in enumerate(self._series):
            draw = scatter if s.points else rasterise
            px, py = draw(np.asarray(s.x, float), np.asarray(s.y, float), xlim, ylim,
                          dots_w, dots_h)
            if len(px) == 0:
                continue
            cy, cx = py // 4, px // 2
            np.bitwise_or.at(bits, (cy, cx), _BRAILLE_BITS[py % 4, px % 2])
            owner[cy, cx] = i  # later series win a shared cell
        styles = [Style(color=s.color) + Style(bgcolor=base.bgcolor) for s in self._series]
        ticks = {0: ylim[1], plot_h // 2: (ylim[0] + ylim[1]) / 2, plot_h - 1: ylim[0]}
        lines: list[Strip] = []
        for row in range(plot_h):
            label = self._y_format(ticks[row]) if row in ticks else ""
            segs = [Segment(f"{label:>{_AXIS_W}}┤" if label else " " * _AXIS_W + "│", axis)]
            row_bits, row_owner = bits[row].tolist(), owner[row].tolist()
            run_text, run_owner = "", None
            for b, o in zip(row_bits, row_owner):
                ch = chr(0x2800 + b) if b else " "
                if o != run_owner and run_text:
                    segs.append(Segment(run_text, styles[run_owner] if run_owner is not None
                                        and run_owner >= 0 else axis))
                    run_text = ""
                run_owner = o
                run_text += ch
            if run_text:
                segs.append(Segment(run_text, styles[run_owner] if run_owner is not None
                                    and run_owner >= 0 else axis))
            lines.append(Strip(segs, width))
        # x axis labels: left, middle, right
        left, mid, right = (fmt_tick(v) for v in (xlim[0], (xlim[0] + xlim[1]) / 2, xlim[1]))
        row = [" "] * plot_w
        for pos, text in ((0, left), (plot_w // 2 - len(mid) // 2, mid), (plot_w - len(right), right)):
            for k, ch in enumerate(text):
                if 0 <= pos + k < plot_w:
                    row[pos + k] = ch
        lines.append(Strip([Segment(" " * _AXIS_W + "└" + "".join(row), axis)], width))
        return lines
