"""Training augmentations: batched tensor ops (memory backend) and the albumentations pipeline.

The tensor ops work on a whole uint8 batch (N,3,H,W) on any device and draw every random
number from the caller's torch.Generator, so an epoch's augmentation is a pure function of
that generator's seed (exact resume). Pixel values stay uint8 until normalisation.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ddpcifar.data.config import AugmentConfig


def flip(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    mask = torch.rand(images.shape[0], 1, 1, 1, generator=gen, device=images.device) < p
    return torch.where(mask, images.flip(-1), images)


def translate(images: torch.Tensor, pad: int, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by (dy, dx), each uniform in [-pad, pad]: pad-and-crop without the pad.

    Implemented as one gather with per-sample row/column indices instead of padding a
    bigger copy; `mode` says what the shift uncovers: 'zero' (black) or 'reflect'.
    """
    n, _, h, w = images.shape
    dev = images.device
    shift = torch.randint(-pad, pad + 1, (n, 2), generator=gen, device=dev)
    rows = torch.arange(h, device=dev) + shift[:, :1]  # (n, h): source row of each output row
    cols = torch.arange(w, device=dev) + shift[:, 1:]  # (n, w)
    if mode == "reflect":  # mirror without repeating the edge pixel, like F.pad(mode="reflect")
        rows = (h - 1) - ((h - 1) - rows.abs()).abs()
        cols = (w - 1) - ((w - 1) - cols.abs()).abs()
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    batch = torch.arange(n, device=dev)[:, None, None]
    # Advanced indexing on dims 0, 2, 3 puts the channel dim last: (n, h, w, c).
    out = images[batch, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    out = out.masked_fill(~inside[..., None], 0)
    # The NHWC result viewed as NCHW is already channels_last in memory.
    return out.permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, size: int, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Fill one size x size square per image, wholly inside it, with `fill` (shape (3,))."""
    n, _, h, w = images.shape
    dev = images.device
    y0 = torch.randint(0, h - size + 1, (n, 1, 1, 1), generator=gen, device=dev)
    x0 = torch.randint(0, w - size + 1, (n, 1, 1, 1), generator=gen, device=dev)
    ys = torch.arange(h, device=dev).view(1, 1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, 1, w)
    square = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return torch.where(square, fill.view(1, 3, 1, 1).to(images.dtype), images)


def basic_augment(
    images: torch.Tensor, cfg: AugmentConfig, fill: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Apply the 'basic' recipe (flip, translate, cutout) to a uint8 (N,3,H,W) batch."""
    if cfg.flip_p > 0:
        images = flip(images, cfg.flip_p, gen)
    if cfg.translate > 0:
        images = translate(images, cfg.translate, cfg.translate_pad, gen)
    if cfg.cutout > 0:
        images = cutout(images, cfg.cutout, fill, gen)
    return images


def mean_fill(mean: Sequence[float]) -> tuple[int, int, int]:
    """The dataset mean as the nearest uint8 RGB colour (zero after normalisation, near enough)."""
    r, g, b = (int(round(min(max(m, 0.0), 255.0))) for m in mean)
    return (r, g, b)


def albumentations_pipeline(cfg: AugmentConfig, mean: Sequence[float]):  # -> A.Compose
    """The ERA-style recipe for HWC uint8 images: flip, Affine, one CoarseDropout hole.

    Uses the albumentations 2.x argument names; 2.0.8 silently ignores the 1.x ones
    (max_holes, max_height), which would make the dropout a no-op. Affine replaces the
    removed ShiftScaleRotate and, like it, mirrors the border (BORDER_REFLECT_101).
    """
    import albumentations as A  # imported lazily: only this recipe needs cv2
    import cv2

    size = cfg.dropout_size
    return A.Compose(
        [
            A.HorizontalFlip(p=cfg.flip_p),
            A.Affine(
                translate_percent=(-cfg.shift, cfg.shift),
                scale=(1.0 - cfg.scale, 1.0 + cfg.scale),
                rotate=(-cfg.rotate, cfg.rotate),
                border_mode=cv2.BORDER_REFLECT_101,
                p=cfg.affine_p,
            ),
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(size, size),
                hole_width_range=(size, size),
                fill=mean_fill(mean),
                p=cfg.dropout_p,
            ),
        ]
    )
