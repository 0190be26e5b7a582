"""Drawing RGB images with the upper-half-block character: fg = top pixel, bg = bottom pixel.

A 32x32 image becomes 32 columns x 16 rows; `downscale` halves it (2x2 mean) for dense grids and
`upscale` repeats pixels (nearest neighbour) for the enlarged view.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style

UPPER_HALF = "▀"


def downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks of an (H, W, 3) uint8 image."""
    if factor <= 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W, 3) image."""
    if factor <= 1:
        return image
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def image_rows(image: np.ndarray) -> list[list[Segment]]:
    """One list of segments per terminal row (H/2 rows of W cells) for an (H, W, 3) image."""
    if image.shape[0] % 2:
        image = np.concatenate([image, np.zeros_like(image[:1])], axis=0)
    pixels = image.tolist()
    rows: list[list[Segment]] = []
    for y in range(0, len(pixels), 2):
        top, bottom = pixels[y], pixels[y + 1]
        rows.append([Segment(UPPER_HALF, Style(color=Color.from_rgb(*t), bgcolor=Color.from_rgb(*b)))
                     for t, b in zip(top, bottom)])
    return rows
