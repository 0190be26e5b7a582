"""What a prepared CIFAR-10 directory contains: class names, split arrays and meta.json."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ddpcifar.errors import UserError

# CIFAR-10's official label order 0..9 (batches.meta); it is also alphabetical.
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)
META_FILE = "meta.json"
META_FORMAT = 1

SourceKind = Literal["download", "pickle-tar", "pickle-dir", "image-folder"]


@dataclass(frozen=True)
class SplitArrays:
    """One split in memory: uint8 images (N, 32, 32, 3) HWC RGB and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        # Programming errors, not user input: the readers validate user data first.
        assert self.images.dtype == np.uint8 and self.images.shape[1:] == IMAGE_SHAPE
        assert self.labels.dtype == np.int64 and self.labels.shape == (len(self.images),)


class SourceInfo(BaseModel):
    """Where the pixels came from, so a data directory explains itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: SourceKind
    path: str
    md5_verified: bool
    note: str


@dataclass(frozen=True)
class Cifar10Source:
    """Both splits read from a source, plus a description for meta.json."""

    train: SplitArrays
    test: SplitArrays
    source: SourceInfo


class SplitCounts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    train: int = Field(ge=1)
    test: int = Field(ge=1)


class SplitClassCounts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    train: tuple[int, ...]
    test: tuple[int, ...]


class DataMeta(BaseModel):
    """The content of meta.json (format 1). Written by data_prep.py, read by loaders."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1]
    classes: tuple[str, ...]
    counts: SplitCounts
    class_counts: SplitClassCounts
    mean: tuple[float, float, float]  # per channel R, G, B of the train split, 0..255 units
    std: tuple[float, float, float]  # population std (ddof=0), same units
    image_shape: tuple[int, int, int]
    source: SourceInfo
    sha256: dict[str, str]  # {"train.beton": hex, "test.beton": hex}

    @model_validator(mode="after")
    def _consistent(self) -> "DataMeta":
        if len(self.classes) != len(CIFAR10_CLASSES):
            raise ValueError(f"expected {len(CIFAR10_CLASSES)} classes, found {len(self.classes)}")
        for split in SPLITS:
            per_class = getattr(self.class_counts, split)
            if len(per_class) != len(self.classes):
                raise ValueError(f"class_counts.{split} has {len(per_class)} entries, expected 10")
            if sum(per_class) != getattr(self.counts, split):
                raise ValueError(f"class_counts.{split} does not add up to counts.{split}")
        if tuple(self.image_shape) != IMAGE_SHAPE:
            raise ValueError(f"image_shape must be {list(IMAGE_SHAPE)}")
        if set(self.sha256) != {f"{s}.beton" for s in SPLITS}:
            raise ValueError("sha256 must have exactly the keys train.beton and test.beton")
        return self


def class_counts(labels: np.ndarray) -> tuple[int, ...]:
    """Number of images per class, in label order."""
    return tuple(int(c) for c in np.bincount(labels, minlength=len(CIFAR10_CLASSES)))


def channel_stats(
    images: np.ndarray, advance: Callable[[int], None] | None = None, chunk: int = 5000
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and population std (ddof=0) of uint8 HWC images, in 0..255 units.

    Counts how often each of the 256 values occurs per channel, so the sums are exact
    integers whatever the input size, and only the final division is float64; it is also
    several times faster than widening 150 MB of pixels to float64.
    """
    histogram = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk]
        for channel in range(3):
            histogram[channel] += np.bincount(block[..., channel].ravel(), minlength=256)
        if advance is not None:
            advance(len(block))
    values = np.arange(256, dtype=np.int64)
    mean, std = [], []
    for channel in range(3):
        # Python ints: exact sums, and int / int is a correctly rounded float.
        n = int(histogram[channel].sum())
        total = int(histogram[channel] @ values)
        total_sq = int(histogram[channel] @ (values * values))
        mean.append(total / n)
        std.append(math.sqrt((n * total_sq - total * total) / (n * n)))
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_meta(data_dir: str | Path, *, verify_sha256: bool = False) -> DataMeta:
    """Read and check `<data_dir>/meta.json` and the presence of both betons.

    Raises UserError (one line naming the path) for a missing directory, a missing or corrupt
    meta.json, a missing beton, a wrong number of classes, or (with `verify_sha256`) a beton
    whose SHA-256 differs from the one recorded when it was written.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory not found (run data_prep.py first): {data_dir}")
    meta_path = data_dir / META_FILE
    if not meta_path.is_file():
        raise UserError(f"meta.json not found (run data_prep.py first): {meta_path}")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"corrupt meta.json ({err}): {meta_path}") from None
    try:
        meta = DataMeta.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "meta.json"
        raise UserError(f"invalid meta.json ({where}: {first['msg']}): {meta_path}") from None
    for split in SPLITS:
        beton = data_dir / f"{split}.beton"
        if not beton.is_file():
            raise UserError(f"beton file missing: {beton}")
        if verify_sha256:
            expected = meta.sha256[beton.name]
            actual = sha256_file(beton)
            if actual != expected:
                raise UserError(
                    f"sha256 mismatch (got {actual[:12]}..., meta.json says {expected[:12]}...): {beton}"
                )
    return meta
