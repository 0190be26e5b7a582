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

from typing import Any

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


# Mixed into the validation draw's seed so it never shares a stream with another use of a seed.
_VAL_STREAM = 0x5EED_7A1


def validation_count(total: int, size: float) -> int:
    """How many of `total` images `data.val_size` holds out: a count, or a fraction (< 1)."""
    n = int(round(total * size)) if 0 < size < 1 else int(size)
    return min(max(n, 0), total)


def validation_positions(labels: np.ndarray, size: float, seed: int) -> np.ndarray:
    """The positions of `labels` held out for validation, ascending: stratified by class (each
    class gives its share, largest remainders rounding), drawn from `seed` alone, so every rank,
    every resume and every trial of a sweep holds out the same images."""
    labels = np.asarray(labels)
    n = validation_count(len(labels), size)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(np.int64)
    for k in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[k] += 1
    rng = np.random.default_rng([seed, _VAL_STREAM])
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(held)).astype(np.int64)


def part_positions(labels: np.ndarray, *, part: str, max_samples: int | None,
                   val_size: float = 0, val_seed: int = 0) -> np.ndarray | None:
    """Positions in a split file of one part: "train" (the train split minus validation),
    "val" (held out from the train split) or "test"; None means every position, in order.

    `data.max_samples` applies first (evenly spaced), the validation split within it.
    """
    base = subset_positions(len(labels), max_samples)
    if part == "test" or (part == "train" and not val_size):
        return base
    within = np.asarray(labels) if base is None else np.asarray(labels)[base]
    held = validation_positions(within, val_size, val_seed)
    every = np.arange(len(within), dtype=np.int64)
    chosen = held if part == "val" else np.setdiff1d(every, held, assume_unique=True)
    return chosen if base is None else base[chosen]


def validation_record(train_labels: np.ndarray, data: Any) -> dict[str, Any]:
    """What `validation.json` in a run directory records: the split's settings, its size per
    class, and the held-out positions of the train split (with their sha256, to compare)."""
    import hashlib

    held = part_positions(train_labels, part="val", max_samples=data.max_samples,
                          val_size=data.val_size, val_seed=data.val_seed)
    held = np.zeros(0, dtype=np.int64) if held is None else held
    labels = np.asarray(train_labels)[held]
    return {"size": int(len(held)), "val_size": data.val_size, "val_seed": data.val_seed,
            "max_samples": data.max_samples, "stratified": True,
            "per_class": np.bincount(labels, minlength=int(np.max(train_labels)) + 1).tolist(),
            "sha256": hashlib.sha256(held.astype("<i8").tobytes()).hexdigest(),
            "positions": held.tolist()}


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
