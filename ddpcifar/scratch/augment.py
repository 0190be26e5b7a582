"""Batch preparation for the NumPy engine: the spec's 'basic' augmentation, then normalisation.

Same meaning as the torch engine's memory backend (ddpcifar/data/augment.py, PixelTable): per
image a shift (dy, dx) each uniform in [-translate, translate] over a zero- or reflect-padded
image, a horizontal flip with probability flip_p, then one cutout x cutout square placed wholly
inside the image and filled with the dataset mean. Only the random streams differ (NumPy's
Generator here, torch's there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Augment:
    """The spec's augment section as the NumPy engine reads it (kind 'none': all zero)."""

    flip_p: float  # probability of a horizontal flip
    translate: int  # largest shift in pixels, each axis
    translate_pad: str  # what a shift uncovers: "zero" (black) or "reflect" (mirrored edge)
    cutout: int  # side of the filled square; 0 = off

    @property
    def active(self) -> bool:
        return self.flip_p > 0 or self.translate > 0 or self.cutout > 0


@dataclass(frozen=True)
class Draws:
    """The random choices for one batch of n images."""

    shift: np.ndarray  # (n, 2) int (dy, dx): output pixel (y, x) shows input pixel (y+dy, x+dx)
    mirror: np.ndarray  # (n,) bool
    corner: np.ndarray  # (n, 2) int (y0, x0) of the cutout square; (n, 0) when cutout is off


def draw(n: int, height: int, width: int, cfg: Augment, rng: np.random.Generator) -> Draws:
    """Draw shifts, then flips, then cutout corners (each only when its setting is on)."""
    t = cfg.translate
    shift = rng.integers(-t, t + 1, size=(n, 2)) if t > 0 else np.zeros((n, 2), dtype=np.int64)
    mirror = rng.random(n) < cfg.flip_p if cfg.flip_p > 0 else np.zeros(n, dtype=bool)
    if cfg.cutout > 0:
        corner = np.stack([rng.integers(0, height - cfg.cutout + 1, size=n),
                           rng.integers(0, width - cfg.cutout + 1, size=n)], axis=1)
    else:
        corner = np.zeros((n, 0), dtype=np.int64)
    return Draws(shift, mirror, corner)


def apply(images: np.ndarray, draws: Draws, cfg: Augment, fill: Sequence[int]) -> np.ndarray:
    """Shift, mirror and cut out (N, H, W, C) uint8 `images` as `draws` say; one gather.

    Output pixel (y, x) of image i is input pixel (y + dy, c) with c = x + dx, or
    c = W - 1 - (x + dx) when mirrored; positions outside the image come from the padding.
    """
    n, h, w, _ = images.shape
    p = cfg.translate
    if p > 0:
        mode = "reflect" if cfg.translate_pad == "reflect" else "constant"
        padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)
    else:
        padded = images
    rows = p + draws.shift[:, :1] + np.arange(h)  # (n, h) rows of the padded image
    cols = p + draws.shift[:, 1:] + np.arange(w)  # (n, w)
    # Mirroring the padded image equals padding the mirrored one (both pads are symmetric).
    cols = np.where(draws.mirror[:, None], (w + 2 * p - 1) - cols, cols)
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if cfg.cutout > 0:
        size = cfg.cutout
        y0, x0 = draws.corner[:, 0, None, None], draws.corner[:, 1, None, None]
        oy, ox = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
        square = (oy >= y0) & (oy < y0 + size) & (ox >= x0) & (ox < x0 + size)
        out[square] = np.asarray(fill, dtype=out.dtype)
    return out


def augment(images: np.ndarray, cfg: Augment, rng: np.random.Generator,
            fill: Sequence[int]) -> np.ndarray:
    """`apply` with choices drawn from `rng`: a pure function of the generator's state."""
    n, h, w, _ = images.shape
    if cfg.translate_pad == "reflect" and cfg.translate >= min(h, w):
        raise ValueError(f"reflect padding of {cfg.translate} needs images larger than that, "
                         f"got {h}x{w}")
    if cfg.cutout > min(h, w):
        raise ValueError(f"cutout {cfg.cutout} does not fit a {h}x{w} image")
    return apply(images, draw(n, h, w, cfg, rng), cfg, fill)


def mean_fill(mean: Sequence[float]) -> tuple[int, ...]:
    """The dataset mean (0..255 units) as the nearest uint8 colour, as the torch engine fills."""
    return tuple(int(round(min(max(m, 0.0), 255.0))) for m in mean)


class Normalizer:
    """uint8 HWC images -> (x - mean) / std in the training dtype, per channel (0..255 units)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], dtype: np.dtype | type):
        self.dtype = np.dtype(dtype)
        self.scale = (1.0 / np.asarray(std, dtype=np.float64)).astype(self.dtype)
        self.shift = (-np.asarray(mean, dtype=np.float64) / np.asarray(std)).astype(self.dtype)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = images.astype(self.dtype)
        out *= self.scale
        out += self.shift
        return out
