"""The loader factory: `build_loader` checks the arguments and picks a backend.

The pieces live apart so that the backends never import this module: the sample orders in
`orders.py` (NumPy only), the `Batch`, `BatchLoader` and `Normalizer` in `batch.py`, and the
backends in `memory_loader.py` and `ffcv_loader.py`, imported here only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ddpcifar.data.batch import BatchLoader, Normalizer
from ddpcifar.data.config import AugmentConfig, DataConfig, check_compatible
from ddpcifar.data.meta import SPLITS, beton_name, has_arrays
from ddpcifar.errors import UserError


def split_path(data: DataConfig, split: str) -> Path:
    """The .beton for `split`, or a UserError saying what is missing."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    path = Path(data.dir) / beton_name(split)
    if not path.is_file():
        raise UserError(f"prepared data not found (run ddpcifar-prep first): {path}")
    return path


def build_loader(
    data: DataConfig,
    augment: AugmentConfig,
    *,
    split: str,
    batch_size: int,
    train: bool,
    rank: int,
    world_size: int,
    seed: int,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = True,
) -> BatchLoader:
    """Build this rank's loader for `split`; train=True shuffles, augments and drops the last batch.

    `split`: "train", "test", or "val", the part of the train split held out by
    `data.val_size` (the "train" loader then skips it). `channels_last`: the batches' memory
    format (pass model.channels_last).
    """
    if split == "val" and not data.val_size:
        raise UserError("split 'val' needs a validation split: set data.val_size")
    if split not in (*SPLITS, "val"):
        raise UserError(f"unknown split {split!r}; expected one of {', '.join((*SPLITS, 'val'))}")
    part, split = split, ("train" if split == "val" else split)
    try:
        check_compatible(data, augment)
    except ValueError as err:
        raise UserError(str(err)) from None
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1: {batch_size}")
    if not 0 <= rank < world_size:
        raise UserError(f"rank must be in [0, world_size): rank={rank}, world_size={world_size}")
    # The memory backend reads the raw arrays when present, else the beton (checked here).
    path = split_path(data, split) if data.loader == "ffcv" or not has_arrays(data.dir, split) else None
    normalize = Normalizer(mean, std, device, channels_last)
    aug = augment if train else AugmentConfig(kind="none")
    if data.loader == "ffcv":
        assert path is not None
        from ddpcifar.data.ffcv_loader import FFCVBatchLoader  # numba import is slow; only when used

        loader: BatchLoader = FFCVBatchLoader(
            path, data, aug, part=part, batch_size=batch_size, train=train, rank=rank,
            world_size=world_size, seed=seed, device=device, normalize=normalize, mean=mean,
        )
    else:
        from ddpcifar.data.memory_loader import MemoryBatchLoader

        loader = MemoryBatchLoader(
            data, aug, split=split, part=part, batch_size=batch_size, train=train, rank=rank,
            world_size=world_size, seed=seed, device=device, normalize=normalize, mean=mean,
        )
    if train and len(loader) == 0:
        raise UserError(
            f"{part} split too small for one full batch per rank: needs at least "
            f"batch_size x world_size = {batch_size * world_size} samples"
        )
    return loader
