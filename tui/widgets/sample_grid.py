"""The Samples tab: a keyboard-driven grid of misclassified test images with captions and filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from tui.samples import Samples, caption
from tui.widgets.halfblock import downscale, image_rows

# (image pixels after scaling, tile width in cells) for the dense and the full-size layout.
_TILE = {16: 29, 32: 34}


def _fit(segments: list[Segment], width: int, style: Style) -> Strip:
    """A strip of exactly `width` cells (padded or cropped)."""
    return Strip(segments).extend_cell_length(width, style).crop(0, width)


class SampleGrid(Widget, can_focus=True):
    """Pages of captioned half-block tiles; arrows move, Enter enlarges, t/p filter by class."""

    BINDINGS = [
        Binding("left", "move(-1, 0)", "prev", show=False),
        Binding("right", "move(1, 0)", "next", show=False),
        Binding("up", "move(0, -1)", "up", show=False),
        Binding("down", "move(0, 1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("enter", "enlarge", "enlarge"),
        Binding("t", "cycle_true(1)", "true class"),
        Binding("T", "cycle_true(-1)", "true class back", show=False),
        Binding("p", "cycle_pred(1)", "pred class"),
        Binding("P", "cycle_pred(-1)", "pred class back", show=False),
        Binding("f", "clear_filters", "clear filters", show=False),
        Binding("z", "zoom", "tile size"),
        Binding("left_square_bracket", "epoch(-1)", "prev eval"),
        Binding("right_square_bracket", "epoch(1)", "next eval"),
    ]

    @dataclass
    class Enlarge(Message):
        """Open the enlarged view at `position` within `order` (indices into the archive)."""

        samples: Samples
        order: list[int]
        position: int

    @dataclass
    class EpochStep(Message):
        """Show the previous (-1) or next (+1) evaluation's archive."""

        delta: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.samples: Samples | None = None
        self.class_names: tuple[str, ...] = ()
        self.true_filter: int | None = None
        self.pred_filter: int | None = None
        self.cursor = 0
        self.tile = 16
        self.message = "no samples yet"
        self.epochs: list[int] = []
        self._order: list[int] = []
        self._tiles: dict[tuple[int, int], list[list[Segment]]] = {}
        self._lines: list[Strip] | None = None

    # -- data in ---------------------------------------------------------------------------

    def set_samples(self, samples: Samples | None, classes: Sequence[str],
                    epochs: Sequence[int] = (), message: str = "no samples yet") -> None:
        """Show an archive (or a message instead of one); filters survive, the cursor is kept."""
        self.samples = samples
        self.class_names = tuple(classes)
        self.epochs = list(epochs)
        self.message = message
        self._tiles.clear()
        self._refilter()

    @property
    def order(self) -> list[int]:
        """Archive indices that pass the filters, in archive order."""
        return list(self._order)

    def _refilter(self) -> None:
        if self.samples is None:
            self._order = []
        else:
            mask = np.ones(len(self.samples), dtype=bool)
            if self.true_filter is not None:
                mask &= self.samples.true == self.true_filter
            if self.pred_filter is not None:
                mask &= self.samples.pred == self.pred_filter
            self._order = np.nonzero(mask)[0].tolist()
        self.cursor = min(self.cursor, max(0, len(self._order) - 1))
        self._invalidate()

    def _invalidate(self) -> None:
        self._lines = None
        self.refresh()

    # -- layout ----------------------------------------------------------------------------

    def _grid(self) -> tuple[int, int, int]:
        """(columns, rows, tile height) that fit the widget at the current tile size."""
        tile_w, tile_h = _TILE[self.tile], self.tile // 2 + 2  # image rows + caption + gap
        cols = max(1, self.size.width // tile_w)
        rows = max(1, (self.size.height - 2) // tile_h)
        return cols, rows, tile_h

    @property
    def page_size(self) -> int:
        cols, rows, _ = self._grid()
        return cols * rows

    def header(self) -> str:
        """The one-line summary above the grid (epoch, counts, filters, page)."""
        if self.samples is None:
            return self.message
        def cls(i: int | None) -> str:
            return "all" if i is None else (self.class_names[i] if i < len(self.class_names) else str(i))
        n = len(self._order)
        first = self.cursor // self.page_size * self.page_size
        shown = f"{first + 1}-{min(n, first + self.page_size)} of {n}" if n else "none match"
        epochs = f" (evals: {self.epochs[0]}..{self.epochs[-1]})" if len(self.epochs) > 1 else ""
        return (f"epoch {self.samples.epoch}{epochs} · {len(self.samples)} misclassified · "
                f"true: {cls(self.true_filter)} · pred: {cls(self.pred_filter)} · {shown}")

    def on_resize(self) -> None:
        self._invalidate()

    def on_focus(self) -> None:
        self._invalidate()

    def on_blur(self) -> None:
        self._invalidate()

    def render_line(self, y: int) -> Strip:
        if self._lines is None:
            self._lines = self._render_lines()
        return self._lines[y] if y < len(self._lines) else Strip.blank(self.size.width)

    def _tile_rows(self, i: int) -> list[list[Segment]]:
        key = (i, self.tile)
        if key not in self._tiles:
            assert self.samples is not None
            img = self.samples.images[i]
            self._tiles[key] = image_rows(downscale(img, img.shape[0] // self.tile or 1))
        return self._tiles[key]

    def _render_lines(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        base = self.rich_style
        dim = base + Style(dim=True)
        lines = [_fit([Segment(self.header()[:width], base)], width, base), Strip.blank(width, base)]
        if self.samples is None or not self._order:
            if self.samples is not None:
                lines.append(_fit([Segment("no image matches these filters (f clears them)", dim)],
                                  width, base))
            return lines + [Strip.blank(width, base) for _ in range(max(0, height - len(lines)))]
        cols, rows, tile_h = self._grid()
        tile_w = _TILE[self.tile]
        first = self.cursor // (cols * rows) * (cols * rows)
        selected = base + Style(reverse=True, bold=True)
        for r in range(rows):
            band: list[list[Segment]] = [[] for _ in range(tile_h)]
            for c in range(cols):
                k = first + r * cols + c
                if k >= len(self._order):
                    for row in band:
                        row.append(Segment(" " * tile_w, base))
                    continue
                i = self._order[k]
                img_rows = self._tile_rows(i)
                img_w = len(img_rows[0])
                pad_l = (tile_w - img_w) // 2
                for y, segs in enumerate(img_rows):
                    band[y] += [Segment(" " * pad_l, base), *segs,
                                Segment(" " * (tile_w - img_w - pad_l), base)]
                text = caption(self.class_names, int(self.samples.true[i]), int(self.samples.pred[i]),
                               float(self.samples.confidence[i]))
                if len(text) > tile_w - 1:
                    text = text[: tile_w - 2] + "…"
                style = selected if k == self.cursor and self.has_focus else (
                    base + Style(underline=True) if k == self.cursor else dim)
                pad = tile_w - len(text)
                band[len(img_rows)] += [Segment(" " * (pad // 2), base), Segment(text, style),
                                        Segment(" " * (pad - pad // 2), base)]
                band[len(img_rows) + 1].append(Segment(" " * tile_w, base))
            lines += [_fit(segs, width, base) for segs in band]
        lines = lines[:height]
        return lines + [Strip.blank(width, base) for _ in range(height - len(lines))]

    # -- actions ---------------------------------------------------------------------------

    def _set_cursor(self, value: int) -> None:
        if self._order:
            self.cursor = max(0, min(len(self._order) - 1, value))
            self._invalidate()

    def action_move(self, dx: int, dy: int) -> None:
        cols, _, _ = self._grid()
        self._set_cursor(self.cursor + dx + dy * cols)

    def action_page(self, delta: int) -> None:
        size = self.page_size
        self._set_cursor((self.cursor // size + delta) * size)

    def action_jump(self, where: int) -> None:
        self._set_cursor(0 if where == 0 else len(self._order) - 1)

    def _cycle(self, current: int | None, delta: int) -> int | None:
        choices: list[int | None] = [None, *range(len(self.class_names))]
        return choices[(choices.index(current if current in choices else None) + delta) % len(choices)]

    def action_cycle_true(self, delta: int) -> None:
        self.true_filter = self._cycle(self.true_filter, delta)
        self.cursor = 0
        self._refilter()

    def action_cycle_pred(self, delta: int) -> None:
        self.pred_filter = self._cycle(self.pred_filter, delta)
        self.cursor = 0
        self._refilter()

    def action_clear_filters(self) -> None:
        self.true_filter = self.pred_filter = None
        self._refilter()

    def action_zoom(self) -> None:
        self.tile = 32 if self.tile == 16 else 16
        self._invalidate()

    def action_enlarge(self) -> None:
        if self.samples is not None and self._order:
            self.post_message(self.Enlarge(self.samples, list(self._order), self.cursor))

    def action_epoch(self, delta: int) -> None:
        self.post_message(self.EpochStep(delta))
