"""im2col / col2im for NHWC arrays: a convolution becomes one matrix product.

Layout is NHWC (batch, height, width, channels) throughout the scratch engine: the patch matrix
built from an NHWC input has rows (n, y, x) and columns (ky, kx, c), so `cols @ W` lands directly
in NHWC order and no transpose is needed before or after the matmul (NCHW would need two).
"""

from __future__ import annotations

import numpy as np


def pad_hw(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad the two spatial axes of an NHWC array (a no-op view when padding is 0)."""
    if padding == 0:
        return x
    n, h, w, c = x.shape
    out = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    out[:, padding:padding + h, padding:padding + w, :] = x
    return out


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Spatial output size of a convolution or pooling window (floor, like torch)."""
    return (size + 2 * padding - kernel) // stride + 1


def windows(x_padded: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """A read-only (N, Ho, Wo, kh, kw, C) view of every kernel window; no data is copied."""
    n, h, w, c = x_padded.shape
    ho = (h - kh) // stride + 1
    wo = (w - kw) // stride + 1
    sn, sh, sw, sc = x_padded.strides
    return np.lib.stride_tricks.as_strided(
        x_padded,
        shape=(n, ho, wo, kh, kw, c),
        strides=(sn, sh * stride, sw * stride, sh, sw, sc),
        writeable=False,
    )


def im2col(x_padded: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """The (N*Ho*Wo, kh*kw*C) patch matrix of an already padded NHWC input (one copy)."""
    win = windows(x_padded, kh, kw, stride)
    n, ho, wo = win.shape[:3]
    return win.reshape(n * ho * wo, kh * kw * x_padded.shape[3])


def col2im(
    dcols: np.ndarray, padded_shape: tuple[int, int, int, int], kh: int, kw: int, stride: int
) -> np.ndarray:
    """Scatter-add patch gradients back onto the padded input: the adjoint of `im2col`.

    Loops over the kh*kw kernel offsets only; each iteration adds one strided slab covering
    every sample and every output pixel, so the Python loop is 9 iterations for a 3x3 kernel.
    """
    n, h, w, c = padded_shape
    ho = (h - kh) // stride + 1
    wo = (w - kw) // stride + 1
    d6 = dcols.reshape(n, ho, wo, kh, kw, c)
    dx = np.zeros(padded_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :] += (
                d6[:, :, :, i, j, :]
            )
    return dx
