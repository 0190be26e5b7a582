"""A run's charts as PNG bytes: curves, per-class bars, confusion matrix, misclassified grid.

Torch-free, shared by `python -m tui export` and the model card (ddpcifar.card). matplotlib is
imported inside the functions, and only its object API is used (`Figure`, drawn by the Agg
canvas that `savefig` picks for PNG): no pyplot, so no global backend or figure registry is
touched, and a training process or a dashboard thread can draw safely. Every figure has the
exact pixel size it is given (no `bbox_inches="tight"`, which would change it).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DPI = 100
TRAIN_RAW, TRAIN, TEST, VAL = "#9ecae1", "#1f77b4", "#ff7f0e", "#2ca02c"  # line colours


@dataclass(frozen=True)
class Line:
    """One line of a curve chart; `marker` "o" for per-evaluation points."""

    x: np.ndarray
    y: np.ndarray
    label: str
    color: str
    width: float = 2.0
    marker: str = ""


def _import_matplotlib() -> None:
    """Import matplotlib so that it writes nothing outside the files the caller asked for.

    Its import makes a config directory and writes a font cache (~/.config/matplotlib,
    ~/.cache/matplotlib, or MPLCONFIGDIR). A training run writes only its run directory (it
    draws its model card; tests/test_security.py checks HOME and TMPDIR stay empty), so unless
    the user set MPLCONFIGDIR, the import gets a temporary one, removed right after. The cost
    is one scan of the installed fonts per process (about 0.1 s with a server's few fonts).
    matplotlib remembers that directory as its cache, which nothing drawn here uses again.
    """
    if "matplotlib.font_manager" in sys.modules or "MPLCONFIGDIR" in os.environ:
        return
    with tempfile.TemporaryDirectory(prefix="ddpcifar-matplotlib-") as scratch:
        os.environ["MPLCONFIGDIR"] = scratch
        try:
            import matplotlib.figure  # noqa: F401 - reads its config, builds the font list
        finally:
            del os.environ["MPLCONFIGDIR"]


def _figure(size: tuple[int, int]) -> Any:
    _import_matplotlib()
    from matplotlib.figure import Figure

    width, height = size
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def curves_png(title: str, ylabel: str, lines: Sequence[Line], size: tuple[int, int]) -> bytes:
    """Lines against epochs, with a legend when any line has points."""
    fig = _figure(size)
    ax = fig.add_subplot()
    for line in lines:
        if len(line.x):
            ax.plot(line.x, line.y, line.marker + "-", color=line.color, lw=line.width,
                    ms=4 if line.marker else 0, label=line.label)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(len(line.x) for line in lines):
        ax.legend()
    fig.tight_layout()  # rearranges within the figure; the pixel size stays fixed
    return _png(fig)


def per_class_png(title: str, labels: Sequence[str], per_class: Sequence[float],
                  size: tuple[int, int]) -> bytes:
    """Horizontal bars of per-class top-1 (0..1), coloured red to green."""
    fig = _figure(size)
    from matplotlib import colormaps

    ax = fig.add_subplot()
    values = np.asarray(per_class, dtype=np.float64) * 100
    y = np.arange(len(values))[::-1]
    ax.barh(y, values, color=colormaps["RdYlGn"](np.clip(values / 100, 0, 1)),
            edgecolor="#333333", lw=0.5)
    ax.set_yticks(y, list(labels))
    for yi, v in zip(y, values):
        ax.text(min(v + 1, 92), yi, f"{v:.1f}%", va="center")
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def confusion_png(title: str, labels: Sequence[str], confusion: Sequence[Sequence[int]],
                  size: tuple[int, int]) -> bytes:
    """The confusion matrix (rows true, columns predicted) with its counts written in."""
    fig = _figure(size)
    ax = fig.add_subplot()
    m = np.asarray(confusion, dtype=np.float64)
    off = m.copy()
    np.fill_diagonal(off, np.nan)  # errors on their own scale, so small confusions are visible
    ax.imshow(off, cmap="Reds", vmin=0)
    diag = np.full_like(m, np.nan)
    np.fill_diagonal(diag, m.diagonal())
    ax.imshow(diag, cmap="Greens", vmin=0, vmax=max(1.0, float(m.diagonal().max(initial=0))))
    high = np.nanmax(off) if np.isfinite(off).any() else 1.0
    for (i, j), count in np.ndenumerate(m):
        strong = (i == j) or count > 0.6 * high
        ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8,
                color="white" if strong else "black")
    ax.set_xticks(range(len(labels)), list(labels), rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def samples_png(title: str, images: np.ndarray, captions: Sequence[str], size: tuple[int, int],
                *, cols: int = 8, rows: int = 5) -> bytes:
    """Up to cols x rows images (N, H, W, 3) uint8 in a grid, each under its caption (two lines:
    the true class, then `→ predicted (confidence)`).

    The tiles are pasted into one array and drawn by a single `imshow`: one axes instead of
    one per image draws several times faster, and the grid looks the same. A short list uses
    fewer rows (and columns), so its tiles come out larger.
    """
    n = min(len(images), cols * rows)
    cols = min(cols, max(n, 1))
    rows = max(1, -(-n // cols))
    h, w = (images.shape[1], images.shape[2]) if n else (32, 32)
    gap, caption_h = max(2, w // 8), (h * 3) // 4  # between tiles; room above each for its caption
    cell_h, cell_w = h + caption_h, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    box = (0.01, 0.01, 0.98, 0.92)  # the axes, as fractions of the figure
    fig = _figure(size)
    ax = fig.add_axes(box)
    ax.axis("off")
    scale = min(box[2] * size[0] / mosaic.shape[1], box[3] * size[1] / mosaic.shape[0])
    fontsize = float(np.clip(w * scale / 15, 6, 10))  # points: a caption line fits its tile
    for k in range(n):
        r, c = divmod(k, cols)
        top, left = r * cell_h + caption_h, c * cell_w + gap // 2
        mosaic[top:top + h, left:left + w] = images[k]
        ax.text(left + w / 2, top - 1, captions[k].replace(" → ", "\n→ "), ha="center",
                va="bottom", fontsize=fontsize)
    ax.imshow(mosaic, interpolation="nearest")
    fig.suptitle(title)
    return _png(fig)


def caption(classes: Sequence[str], true: int, pred: int, confidence: float) -> str:
    """`true → predicted (confidence%)`, with class indices when names are unknown."""
    def name(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else f"class {i}"
    return f"{name(true)} → {name(pred)} ({confidence * 100:.0f}%)"
