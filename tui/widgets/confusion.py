"""The confusion matrix as a coloured grid: rows are true classes, columns predictions.

Cell colour grows with the count; the diagonal (correct) is green, errors red, so a
confused pair of classes stands out at a glance.
"""

from __future__ import annotations

from typing import Sequence

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.widgets import Static


def cell_style(count: int, scale: int, diagonal: bool) -> Style:
    """Background intensity by count relative to `scale`; green on the diagonal, red elsewhere."""
    f = 0.0 if scale <= 0 else min(1.0, count / scale)
    if diagonal:
        bg = Color.from_rgb(20, int(40 + 150 * f), 40)
    else:
        bg = Color.from_rgb(int(30 + 200 * f ** 0.5), 25, 35) if count else Color.from_rgb(30, 30, 36)
    return Style(color="white" if f < 0.75 or not diagonal else "black", bgcolor=bg)


class ConfusionGrid(Static):
    """Call `show(classes, confusion)`; column headers are the first letters of each class."""

    CELL = 5

    def show(self, classes: Sequence[str], confusion: Sequence[Sequence[int]]) -> None:
        self.update(self._build(list(classes), [list(r) for r in confusion]))

    def _build(self, classes: list[str], matrix: list[list[int]]) -> Text:
        if not matrix:
            return Text("no evaluation yet", style="dim")
        n = len(matrix)
        names = [classes[i] if i < len(classes) else str(i) for i in range(n)]
        label_w = max(len(x) for x in names)
        text = Text()
        text.append(" " * (label_w + 1) + "".join(f"{x[:self.CELL - 1]:>{self.CELL}}" for x in names),
                    style="bold")
        text.append("\n")
        diag_scale = max((matrix[i][i] for i in range(n) if i < len(matrix[i])), default=0)
        off_scale = max((c for i, r in enumerate(matrix) for j, c in enumerate(r) if i != j),
                        default=0)
        for i, row in enumerate(matrix):
            text.append(f"{names[i]:>{label_w}} ", style="bold")
            for j, count in enumerate(row):
                diag = i == j
                text.append(f"{count:>{self.CELL}}",
                            style=cell_style(count, diag_scale if diag else off_scale, diag))
            text.append("\n")
        text.append(f"{'':>{label_w}} rows: true class · columns: predicted", style="dim")
        return text
