"""Loading the misclassified-image archives `samples/epoch_NNNN.npz` (docs/run_directory.md)."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

_NAME = re.compile(r"^epoch_(\d{4,})\.npz$")


class SamplesError(Exception):
    """An archive that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Samples:
    """The misclassified test images of one evaluation."""

    epoch: int
    images: np.ndarray  # (N, H, W, 3) uint8
    true: np.ndarray  # (N,) int64
    pred: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float32
    index: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.true)


def sample_epochs(run_path: Path) -> list[int]:
    """Epochs that have a samples archive, ascending (temporary files are ignored)."""
    try:
        names = [p.name for p in (run_path / "samples").iterdir()]
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _NAME.match(n)))


def samples_path(run_path: Path, epoch: int) -> Path:
    return run_path / "samples" / f"epoch_{epoch:04d}.npz"


def load_samples(run_path: Path, epoch: int) -> Samples:
    """Load and validate one archive; raises SamplesError with a one-line reason."""
    path = samples_path(run_path, epoch)
    label = f"samples/{path.name}"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("images", "true", "pred", "confidence", "index")}
    except KeyError as err:
        raise SamplesError(f"{label}: missing array {err}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise SamplesError(f"{label}: cannot read ({str(err).splitlines()[0][:80]})") from None
    images = arrays["images"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise SamplesError(f"{label}: images must be (N, H, W, 3) uint8, got "
                           f"{images.shape} {images.dtype}")
    n = len(images)
    for key in ("true", "pred", "confidence", "index"):
        if arrays[key].shape != (n,):
            raise SamplesError(f"{label}: '{key}' has shape {arrays[key].shape}, expected ({n},)")
    return Samples(epoch=epoch, images=images, true=arrays["true"].astype(np.int64),
                   pred=arrays["pred"].astype(np.int64),
                   confidence=arrays["confidence"].astype(np.float32),
                   index=arrays["index"].astype(np.int64))


def caption(classes: Sequence[str], true: int, pred: int, confidence: float) -> str:
    """`true → predicted (confidence%)`, with class indices when names are unknown."""
    def name(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else f"class {i}"
    return f"{name(true)} → {name(pred)} ({confidence * 100:.0f}%)"
