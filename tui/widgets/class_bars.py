"""Per-class top-1 accuracy as horizontal bars (eighth-block resolution)."""

from __future__ import annotations

from typing import Sequence

from rich.color import Color
from rich.text import Text
from textual.widgets import Static

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A bar `fraction` (0..1) of `width` cells long, using eighth blocks for the tip."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[rest] if rest else "")).ljust(width)


def accuracy_color(fraction: float) -> str:
    """Red at 0, amber at 0.5, green at 1."""
    f = max(0.0, min(1.0, fraction))
    red, green = (1.0, f * 2) if f < 0.5 else (2 - f * 2, 1.0)
    return Color.from_rgb(int(40 + 200 * red), int(40 + 180 * green), 70).name


class ClassBars(Static):
    """Call `show(classes, per_class)`; bars scale with the widget's width."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._data: tuple[tuple[str, ...], tuple[float, ...]] = ((), ())

    def show(self, classes: Sequence[str], per_class: Sequence[float]) -> None:
        self._data = (tuple(classes), tuple(per_class))
        self.update(self._build())

    def on_resize(self) -> None:
        self.update(self._build())

    def _build(self) -> Text:
        classes, values = self._data
        if not values:
            return Text("no evaluation yet", style="dim")
        names = [classes[i] if i < len(classes) else f"class {i}" for i in range(len(values))]
        label_w = max(len(n) for n in names)
        width = max(5, self.content_size.width - label_w - 9)
        text = Text()
        for name, v in zip(names, values):
            text.append(f"{name:>{label_w}} ")
            text.append(bar(v, width), style=accuracy_color(v))
            text.append(f" {v * 100:5.1f}%\n")
        text.rstrip()
        return text
