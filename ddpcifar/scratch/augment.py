"""Batch preparation for the NumPy engine: seeded flip + translate, then normalisation."""

from __future__ import annotations

import numpy as np


def flip_translate(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Randomly mirror each (N, H, W, C) image and shift it by up to `max_shift` pixels.

    Shifting is a crop of the reflect-padded image at a random offset. Both changes are one
    fancy-index gather: each sample's row and column indices are built, the column indices
    reversed for the mirrored ones.
    """
    n, h, w, _ = images.shape
    if max_shift > 0:
        padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                        mode="reflect")
    else:
        padded = images
    dy = rng.integers(0, 2 * max_shift + 1, size=n)
    dx = rng.integers(0, 2 * max_shift + 1, size=n)
    flip = rng.random(n) < 0.5
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


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
