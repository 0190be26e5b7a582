"""One image drawn large: nearest-neighbour upscaling by the biggest factor that fits (max 3x)."""

from __future__ import annotations

import numpy as np
from rich.segment import Segment
from textual.strip import Strip
from textual.widget import Widget

from tui.widgets.halfblock import image_rows, upscale


class ImageView(Widget):
    """Shows `image` (H, W, 3 uint8) centred; `scale` is the factor actually used."""

    def __init__(self, image: np.ndarray, *, max_scale: int = 3, id: str | None = None) -> None:
        super().__init__(id=id)
        self.image = image
        self.max_scale = max_scale
        self.scale = 1
        self._lines: list[Strip] | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.image = image
        self._lines = None
        self.refresh()

    def on_resize(self) -> None:
        self._lines = None

    def _fit_scale(self) -> int:
        h, w = self.image.shape[:2]
        for s in range(self.max_scale, 1, -1):
            if w * s <= self.size.width and h * s // 2 <= self.size.height:
                return s
        return 1

    def render_line(self, y: int) -> Strip:
        if self._lines is None:
            self.scale = self._fit_scale()
            base = self.rich_style
            rows = image_rows(upscale(self.image, self.scale))
            pad_l = max(0, (self.size.width - len(rows[0])) // 2)
            pad_t = max(0, (self.size.height - len(rows)) // 2)
            blank = Strip.blank(self.size.width, base)
            self._lines = [blank] * pad_t + [
                Strip([Segment(" " * pad_l, base), *r]).extend_cell_length(self.size.width, base)
                .crop(0, self.size.width) for r in rows]
        return self._lines[y] if y < len(self._lines) else Strip.blank(self.size.width, self.rich_style)
