"""Read CIFAR-10 laid out as image folders: `<root>/{train,test}/<class>/*.png|*.jpg|*.jpeg`.

Accepted pixel formats, decided once here: PNG or JPEG files of exactly 32x32 pixels in PIL
mode RGB, L (greyscale, replicated to three channels) or P (palette, expanded to RGB).
Anything with alpha or another colour model (RGBA, LA, CMYK, I;16, 1, ...) is refused rather
than silently flattened.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpcifar.data.meta import CIFAR10_CLASSES, SPLITS, Cifar10Source, SourceInfo, SplitArrays
from ddpcifar.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ACCEPTED_MODES = ("RGB", "L", "P")
ACCEPTED_FORMATS = ("PNG", "JPEG")
CHUNK = 500  # files per pool task: big enough to amortise IPC, small enough for a live bar


def looks_like_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() or (root / "test").is_dir()


def _visible(entries: list[Path]) -> list[Path]:
    # Hidden files (.DS_Store, editor swap files) are never data.
    return sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.name)


def list_split(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Files of one split in (class, file name) order, and their labels; checks the layout."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"missing split folder {split}/: {split_dir}")
    entries = _visible(list(split_dir.iterdir()))
    for entry in entries:
        if not entry.is_dir():
            raise UserError(f"unexpected file in split folder (expected class folders): {entry}")
        if entry.name not in CIFAR10_CLASSES:
            raise UserError(
                f"unknown class folder {entry.name!r} (expected the 10 CIFAR-10 classes): {entry}"
            )
    present = {e.name for e in entries}
    for name in CIFAR10_CLASSES:
        if name not in present:
            raise UserError(f"missing class folder: {split_dir / name}")
    # Sorted folder names are exactly CIFAR10_CLASSES, so the label is the sorted position.
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(entries):
        class_files = _visible(list(class_dir.iterdir()))
        if not class_files:
            raise UserError(f"no images in class folder: {class_dir}")
        for path in class_files:
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"unsupported file (expected .png, .jpg or .jpeg images): {path}")
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    return files, np.asarray(labels, dtype=np.int64)


def decode_image(path: Path) -> np.ndarray:
    """One image file as a uint8 (32, 32, 3) RGB array, or a UserError naming the file."""
    try:
        with Image.open(path) as img:
            if img.format not in ACCEPTED_FORMATS:
                raise UserError(f"unsupported image format {img.format} (expected PNG or JPEG): {path}")
            if img.size != (32, 32):
                raise UserError(f"image is {img.size[0]}x{img.size[1]}, expected 32x32: {path}")
            if img.mode not in ACCEPTED_MODES:
                raise UserError(
                    f"unsupported image mode {img.mode} (accepted: {', '.join(ACCEPTED_MODES)}): {path}"
                )
            if img.mode == "P" and "transparency" in img.info:
                raise UserError(f"palette image with transparency is not accepted: {path}")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise UserError(f"not a readable image: {path}") from None
    except OSError as err:  # truncated or damaged image data
        raise UserError(f"cannot decode image ({err}): {path}") from None


def _decode_chunk(paths: list[Path]) -> np.ndarray:
    return np.stack([decode_image(p) for p in paths])


def decode_all(files: list[Path], workers: int,
               advance: Callable[[int], None] | None = None, chunk: int = CHUNK) -> np.ndarray:
    """Decode `files` in order into one (N, 32, 32, 3) array, using a small process pool."""
    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    if workers <= 1 or len(chunks) == 1:
        results = map(_decode_chunk, chunks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_decode_chunk, chunks)  # yields in submission order
    try:
        filled = 0
        for block in results:
            out[filled : filled + len(block)] = block
            filled += len(block)
            if advance is not None:
                advance(len(block))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return out


def read_image_folder(root: Path, *, workers: int = 2,
                      progress: Callable[[str, int], Callable[[int], None]] | None = None
                      ) -> Cifar10Source:
    """Read both splits. `progress(description, total)` returns an `advance(n)` callback."""
    listed = {split: list_split(root, split) for split in SPLITS}  # check the layout up front
    arrays = {}
    for split, (files, labels) in listed.items():
        advance = progress(f"decoding {split} images", len(files)) if progress else None
        arrays[split] = SplitArrays(images=decode_all(files, workers, advance), labels=labels)
    info = SourceInfo(kind="image-folder", path=str(root.resolve()), md5_verified=False,
                      note="image folders (no checksums exist for this layout); "
                           "JPEG pixels are as decoded by Pillow's libjpeg")
    return Cifar10Source(arrays["train"], arrays["test"], info)
