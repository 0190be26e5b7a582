"""What a prepared CIFAR-10 directory contains: class names, split arrays and meta.json.

A prepared directory holds `<split>.beton` (FFCV's format) and, since the arrays were added,
the same pixels as plain numpy files `<split>_images.npy` (uint8 (N,32,32,3)) and
`<split>_labels.npy` (int64 (N,)): the in-memory loader reads those without importing FFCV
(no numba start-up, and it works where FFCV is not installed). Older directories without the
arrays still work through the betons.
"""

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

SourceKind = Literal["download", "pickle-tar", "pickle-dir", "image-folder", "synthetic"]
SYNTHETIC_LABEL = "synthetic, not for accuracy"  # in meta.json's source.note and on stdout


def beton_name(split: str) -> str:
    return f"{split}.beton"


def array_names(split: str) -> tuple[str, str]:
    """(images, labels) .npy file names of a split. .npy, not .npz: np.savez stamps the time
    into its zip entries, so reruns would not be byte-identical."""
    return f"{split}_images.npy", f"{split}_labels.npy"


BETON_FILES = tuple(beton_name(s) for s in SPLITS)
ARRAY_FILES = tuple(name for s in SPLITS for name in array_names(s))


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
    # {"train.beton": hex, "test.beton": hex, "train_images.npy": hex, ...}: the betons, the
    # arrays, or both (a synthetic set written where FFCV is not installed has no betons).
    sha256: dict[str, str]

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
        if set(self.sha256) not in ({*BETON_FILES}, {*ARRAY_FILES}, {*BETON_FILES, *ARRAY_FILES}):
            raise ValueError(f"sha256 must have the keys {', '.join(BETON_FILES)} and/or "
                             f"{', '.join(ARRAY_FILES)}")
        return self


def write_arrays(data_dir: Path, split: str, arrays: SplitArrays) -> None:
    """Write a split's raw arrays (np.save: a fixed header and the bytes, so reruns are identical)."""
    images_name, labels_name = array_names(split)
    np.save(data_dir / images_name, np.ascontiguousarray(arrays.images), allow_pickle=False)
    np.save(data_dir / labels_name, arrays.labels.astype(np.int64), allow_pickle=False)


def has_arrays(data_dir: str | Path, split: str) -> bool:
    return all((Path(data_dir) / name).is_file() for name in array_names(split))


def read_arrays(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's images (uint8 (N,32,32,3)) and labels (int64 (N,)) from its .npy files, checked."""
    images_path, labels_path = (Path(data_dir) / name for name in array_names(split))
    try:
        images = np.load(images_path, allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the {split} arrays ({err}): {images_path.parent}") from None
    if (images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or labels.dtype != np.int64
            or labels.shape != (len(images),)):
        raise UserError(f"{split} arrays have the wrong shape or type (images {images.dtype} "
                        f"{images.shape}, labels {labels.dtype} {labels.shape}): {images_path.parent}")
    return images, labels


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
    """Read and check `<data_dir>/meta.json` and the presence of the files it lists.

    Raises UserError (one line naming the path) for a missing directory, a missing or corrupt
    meta.json, a missing beton or array file, a wrong number of classes, or (with
    `verify_sha256`) a file whose SHA-256 differs from the one recorded when it was written.
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
    listed = [name for name in (*BETON_FILES, *ARRAY_FILES) if name in meta.sha256]  # betons first
    for name in listed:
        path = data_dir / name
        if not path.is_file():
            kind = "beton" if name.endswith(".beton") else "array"
            raise UserError(f"{kind} file missing: {path}")
        if verify_sha256:
            expected = meta.sha256[name]
            actual = sha256_file(path)
            if actual != expected:
                raise UserError(
                    f"sha256 mismatch (got {actual[:12]}..., meta.json says {expected[:12]}...): {path}"
                )
    return meta
