"""The sample orders both loader backends share, in NumPy alone (the NumPy engine uses them too).

A rank sees the same samples whichever backend streams them:

- train: one permutation of the split per epoch, drawn from a private generator seeded by
  (seed, epoch) (never the global RNG, so a resumed run replays it), identical on every
  rank; rank r takes every W-th element starting at r, truncated so that all ranks have
  the same number of full batches (drop_last).
- eval: positions 0..N-1 padded to a multiple of W by repeating the start of the list,
  rank r taking positions r, r+W, ... (torch's DistributedSampler with shuffle=False,
  which FFCV's distributed SEQUENTIAL order uses). Padding positions carry index -1.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers with numpy's SeedSequence (no collisions by addition)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def train_order(n: int, *, seed: int, epoch: int, rank: int, world_size: int, batch_size: int) -> np.ndarray:
    """Sample positions this rank trains on in `epoch`, in order (a multiple of batch_size)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    batches = (n // world_size) // batch_size  # equal on every rank; the remainder is dropped
    return perm[rank::world_size][: batches * batch_size]


def subset_positions(total: int, max_samples: int | None) -> np.ndarray | None:
    """Evenly spaced split positions for `data.max_samples` (None: use everything).

    Not the first N: a split written class by class (an image-folder source) would then hold
    only the first classes. Every k-th sample keeps each class's share.
    """
    if max_samples is None or max_samples >= total:
        return None
    return (np.arange(max_samples, dtype=np.int64) * total) // max_samples


def to_split_index(index: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    """Map positions within a subset back to positions in the split; -1 (padding) stays -1."""
    index = np.asarray(index, dtype=np.int64)
    if positions is None:
        return index
    return np.where(index >= 0, positions[np.maximum(index, 0)], -1)


def eval_positions(n: int, *, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample, index) for this rank's eval pass; index is -1 where `sample` is a padding duplicate.

    Mirrors torch.utils.data.DistributedSampler(shuffle=False, drop_last=False).
    """
    padded = -(-n // world_size) * world_size
    positions = np.arange(rank, padded, world_size)
    samples = positions % n  # padding repeats the start of the list
    index = np.where(positions < n, positions, -1)
    return samples, index
