"""Whitening stems: a k x k convolution set from the training data, not learned.

A model that has one names the convolution in its `whitening_stem` class attribute; the stem
must map C channels to 2 * C * k * k so it can hold every whitening direction with both signs.
The filters project each k x k patch onto the eigenvectors of the patches' second-moment
matrix, divided by sqrt(eigenvalue + eps): the first half of the outputs then has (about)
identity covariance, and the second half is its negative, so a following GELU/ReLU loses
nothing. The computation is a pure function of the images, so every DDP rank gets the same
filters from the same images without communicating.
"""

from __future__ import annotations

import torch
from torch import nn


def patch_matrix(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """Every k x k patch of (N, C, H, W) `images` as a row, flattened in conv-weight (c, kh, kw) order."""
    n, c = images.shape[:2]
    patches = images.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # (N, C, H', W', k, k)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)


def whitening_filters(images: torch.Tensor, kernel: int, eps: float) -> torch.Tensor:
    """(2 * C * k * k, C, k, k) filters: the whitening directions, largest eigenvalue first, then their negatives."""
    if images.ndim != 4:
        raise ValueError(f"whitening expects (N, C, H, W) images, got {tuple(images.shape)}")
    c = images.shape[1]
    patches = patch_matrix(images, kernel).double()
    second_moment = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
    filters = filters.reshape(c * kernel * kernel, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


def stem_of(model: nn.Module) -> nn.Conv2d:
    """The model's whitening stem convolution; ValueError if it has none."""
    name = getattr(type(model), "whitening_stem", None)
    stem = getattr(model, name, None) if name else None
    if not isinstance(stem, nn.Conv2d):
        raise ValueError(f"{type(model).__name__} has no whitening stem")
    return stem


@torch.no_grad()
def init_whitening(model: nn.Module, images: torch.Tensor, eps: float) -> nn.Conv2d:
    """Set the model's stem to whiten `images` (normalised, N x C x H x W), freeze its weight, zero its bias."""
    stem = stem_of(model)
    k = stem.kernel_size[0]
    c = stem.in_channels
    if stem.kernel_size != (k, k) or stem.out_channels != 2 * c * k * k or stem.groups != 1:
        raise ValueError(f"a whitening stem maps C to 2*C*k*k channels with a square kernel, got "
                         f"{c} -> {stem.out_channels}, kernel {tuple(stem.kernel_size)}")
    weight = whitening_filters(images.to(stem.weight.device), k, eps)
    stem.weight.copy_(weight.to(stem.weight.dtype))  # copy_ keeps the weight's memory format
    stem.weight.requires_grad_(False)
    if stem.bias is not None:
        stem.bias.zero_()
    return stem
