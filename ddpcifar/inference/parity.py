"""Parity of an exported model with PyTorch fp32 eager, and the tolerance an export must meet.

Both sides see the same uint8 images: the reference through the training normaliser and the
eager model, the export through its own graph and runtime. The first image runs alone, the rest
in batches of 256 and a remainder, so every check also exercises the dynamic batch dimension.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ddpcifar.errors import UserError

DEFAULT_IMAGES = 1000
RANDOM_SEED = 0
BATCH = 256
# Chosen from measurement (docs/inference.md): fp32 runtimes differ from eager in summation order
# only, which moved logits by at most ~1e-5 across every model and format; 1e-3 leaves two
# orders of magnitude for larger trained logits while a real fault (a wrong normalisation, a
# layer left in training mode) moves them by far more. Top-1 may flip only on a near-tie.
MAX_ABS_DIFF = 1e-3
MIN_TOP1_AGREEMENT = 0.999

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Parity:
    """How far an export's outputs are from the reference's, and whether that is within bounds."""

    images: int
    source: str
    max_abs_logit_diff: float
    top1_agreement: float
    max_abs_diff_allowed: float = MAX_ABS_DIFF
    min_top1_agreement: float = MIN_TOP1_AGREEMENT

    @property
    def passed(self) -> bool:
        return (self.max_abs_logit_diff <= self.max_abs_diff_allowed
                and self.top1_agreement >= self.min_top1_agreement)

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        return (f"max |Δlogit| {self.max_abs_logit_diff:.2e} (allowed {self.max_abs_diff_allowed:g}), "
                f"top-1 agreement {self.top1_agreement:.2%} (needed "
                f"{self.min_top1_agreement:.1%}) on {self.images} images ({self.source})")


def parity_images(count: int, data_dir: Path | None) -> tuple[np.ndarray, str]:
    """`count` uint8 (N, 32, 32, 3) images: the test split's first ones when `data_dir` is a
    prepared directory, topped up with seeded random images when it has fewer."""
    if count < 1:
        raise UserError(f"--parity-images must be >= 1, got {count}")
    parts, sources = [], []
    if data_dir is not None:
        from ddpcifar.data.beton import read_split
        from ddpcifar.data.meta import load_meta

        load_meta(data_dir, verify_sha256=True)
        test, _ = read_split(data_dir, "test")
        parts.append(test[:count])
        sources.append(f"{data_dir} test split, first {len(parts[0])}")
    missing = count - sum(len(p) for p in parts)
    if missing > 0:
        rng = np.random.default_rng(RANDOM_SEED)
        parts.append(rng.integers(0, 256, size=(missing, 32, 32, 3), dtype=np.uint8))
        sources.append(f"{missing} random uint8 images (seed {RANDOM_SEED})")
    return np.ascontiguousarray(np.concatenate(parts)), " + ".join(sources)


def measure(reference: Runner, exported: Runner, images: np.ndarray, source: str) -> Parity:
    """Run both on `images` (first alone, then in batches) and compare their outputs."""
    bounds = [0, 1, *range(1 + BATCH, len(images), BATCH), len(images)]
    worst, agree = 0.0, 0
    for start, stop in zip(bounds, bounds[1:]):
        if start == stop:
            continue
        chunk = images[start:stop]
        want, got = reference(chunk), exported(chunk)
        if got.shape != want.shape:
            raise UserError(f"the exported model returned shape {tuple(got.shape)} for "
                            f"{len(chunk)} images, expected {tuple(want.shape)}")
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max()))
        agree += int((got.argmax(1) == want.argmax(1)).sum())
    return Parity(len(images), source, worst, agree / len(images))
