"""The `data` and `augment` sections of the run spec, validated when the spec is loaded.

Both models are self-contained: the run spec embeds them as-is. The one rule that spans
both sections (which augmentations a backend can run) lives in `check_compatible`, which
the run spec's own validator and `build_loader` both call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LoaderKind = Literal["ffcv", "memory"]
AugmentKind = Literal["none", "basic", "albumentations"]


class DataConfig(BaseModel):
    """Where the prepared data lives and which backend streams it."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(
        default=Path("data/cifar10"),
        description="Prepared data directory holding train.beton, test.beton and meta.json "
        "(written by `ddpcifar-prep`).",
    )
    loader: LoaderKind = Field(
        # 'memory' is the default: its augmentation is seeded (exact resume), it needs no
        # numba compile, and on CPU it used ~8-9 us of CPU per image against FFCV's ~14
        # (docs/loaders.md); on a GPU its ops run on the device, FFCV's on the CPU.
        default="memory",
        description="'memory': the whole split as one uint8 tensor on the device, "
        "augmented with batched tensor ops (seeded). 'ffcv': FFCV's Loader with its "
        "numba pipeline (its augmentations use an unseedable RNG).",
    )
    num_workers: int = Field(
        default=2,
        ge=0,
        le=256,
        description="CPU workers per rank. ffcv: numba threads (0 is treated as 1). "
        "memory + albumentations: DataLoader worker processes (0 = augment in the main "
        "process). Unused by the memory backend's tensor augmentations.",
    )
    os_cache: bool = Field(
        default=True,
        description="ffcv only: read the .beton through the OS page cache (shared by all "
        "ranks on a machine) instead of a per-process copy.",
    )
    max_samples: int | None = Field(
        default=None,
        ge=1,
        description="Use only the first N samples of each split (quick runs, smoke tests); "
        "null uses every sample.",
    )

    val_size: float = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Validation images held out of the train split (never trained on): a "
        "count (e.g. 5000), or a fraction below 1 (e.g. 0.1); 0 = none. Stratified by class "
        "and drawn from val_seed alone, so it is the same on every rank, across resumes and "
        "in every trial and seed of a sweep. With a validation split, best.pt is chosen by "
        "validation loss.",
    )
    val_seed: int = Field(default=0, ge=0, description="Seed of the validation split's draw.")

    @field_validator("val_size")
    @classmethod
    def _whole_count_or_fraction(cls, value: float) -> float:
        if value >= 1 and not float(value).is_integer():
            raise ValueError(f"a count must be a whole number and a fraction below 1, got {value}")
        return int(value) if value >= 1 else value

    @field_validator("dir")
    @classmethod
    def _dir_not_empty(cls, value: Path) -> Path:
        if str(value).strip() in ("", "."):
            raise ValueError(f"dir must name the prepared data directory, got {str(value)!r}")
        return value


class AugmentConfig(BaseModel):
    """Training-time augmentation; evaluation never augments."""

    model_config = ConfigDict(extra="forbid")

    kind: AugmentKind = Field(
        default="basic",
        description="'none'; 'basic': flip + translate + cutout as batched ops (both "
        "backends); 'albumentations': flip + Affine + one CoarseDropout hole on HWC uint8 "
        "images in DataLoader workers (memory backend only).",
    )
    flip_p: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="basic, albumentations: probability of a horizontal flip.",
    )
    flip_mode: Literal["random", "alternating"] = Field(
        default="random",
        description="basic: 'random' flips each image with probability flip_p every epoch; "
        "'alternating' flips each image once at random (probability flip_p, drawn from the "
        "seed) and mirrors the whole split on every other epoch (memory backend only).",
    )
    translate: int = Field(
        default=4,
        ge=0,
        le=16,
        description="basic: pad-and-crop shift, each axis uniform in [-translate, "
        "translate] pixels; 0 = off.",
    )
    translate_pad: Literal["zero", "reflect"] = Field(
        default="zero",
        description="basic: what the shift uncovers. 'zero' = black pixels (as torchvision "
        "RandomCrop(padding=..) and FFCV's RandomTranslate); 'reflect' mirrors the edge "
        "(memory backend only).",
    )
    cutout: int = Field(
        default=0,
        ge=0,
        le=32,
        description="basic: side in pixels of one square per image filled with the dataset "
        "mean (zero after normalisation), placed wholly inside the image; 0 = off.",
    )
    affine_p: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="albumentations: probability of the Affine (shift/scale/rotate) step.",
    )
    shift: float = Field(
        default=0.1,
        ge=0.0,
        le=0.5,
        description="albumentations: max shift as a fraction of the side, each axis.",
    )
    scale: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="albumentations: zoom factor uniform in [1 - scale, 1 + scale].",
    )
    rotate: float = Field(
        default=15.0,
        ge=0.0,
        le=180.0,
        description="albumentations: rotation uniform in [-rotate, rotate] degrees.",
    )
    dropout_p: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="albumentations: probability of blanking one square with the mean.",
    )
    dropout_size: int = Field(
        default=16,
        ge=1,
        le=32,
        description="albumentations: side in pixels of the CoarseDropout square.",
    )


def check_compatible(data: DataConfig, augment: AugmentConfig) -> None:
    """Raise ValueError naming the fields when `data.loader` cannot run `augment`.

    A ValueError (not UserError) so that a pydantic model validator of the run spec can
    call this and report it like any other field error.
    """
    if data.loader != "ffcv":
        return
    if augment.kind == "albumentations":
        raise ValueError(
            "augment.kind='albumentations' needs data.loader='memory': albumentations "
            "runs on numpy images in DataLoader workers, not inside FFCV's numba pipeline"
        )
    if augment.kind == "basic" and augment.flip_mode == "alternating":
        raise ValueError(
            "augment.flip_mode='alternating' needs data.loader='memory': FFCV's "
            "RandomHorizontalFlip draws a new flip every epoch; use flip_mode='random'"
        )
    if augment.kind == "basic" and augment.translate > 0 and augment.translate_pad == "reflect":
        raise ValueError(
            "augment.translate_pad='reflect' needs data.loader='memory': FFCV's "
            "RandomTranslate only fills with a constant; use translate_pad='zero'"
        )
