"""What predict reads: image files, folders of them, and the splits of a prepared data directory.

Every input is checked before any model work: a path that does not exist or cannot be read, a
file that is not an image, an empty folder, a split that is not there, each one line. Pixels are
decoded later, a batch at a time (a corrupt body is found then, still before anything is
written). Images of any mode become RGB; one that is not 32x32 is resized with PIL's bicubic
filter, which antialiases when it shrinks (its support widens with the scale factor), and says
so; `resize=False` refuses it instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ddpcifar.errors import UserError

SIZE = 32  # every model takes 32x32 RGB
# What a folder contributes; any other file in it is skipped (an explicit file is always tried).
IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm", ".pbm", ".pnm"))
SPLIT_SEPARATOR = ":"  # DIR:SPLIT names a prepared directory's split, e.g. data/cifar10:test


@dataclass(frozen=True)
class ImageInput:
    """One image to classify: a file, or one image of a prepared split (with its label)."""

    name: str  # as printed: the file's path, or DIR:SPLIT[index]
    path: Path | None = None
    pixels: np.ndarray | None = None  # uint8 (32, 32, 3), a split's image
    label: str | None = None  # the true class name, known for a split's image
    size: tuple[int, int] = (SIZE, SIZE)  # (width, height) as stored


@dataclass
class InputSet:
    """Every input in order, and the class names of the prepared directories they came from."""

    items: list[ImageInput] = field(default_factory=list)
    data_classes: dict[Path, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageBatch:
    """Decoded images: uint8 (N, 32, 32, 3) RGB, and per image the (width, height) it was
    resized from, or None."""

    items: list[ImageInput]
    images: np.ndarray
    resized_from: list[tuple[int, int] | None]


def gather_inputs(args: Sequence[str], *, resize: bool = True) -> InputSet:
    """Resolve command-line inputs (files, folders, DIR:SPLIT) into checked `ImageInput`s."""
    found = InputSet()
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = _images_in_folder(path)
            if not files:
                raise UserError(f"no image files in folder {path} (looked for "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
            found.items.extend(_checked_file(f, resize) for f in files)
        elif path.exists() or path.is_symlink():
            found.items.append(_checked_file(path, resize))
        elif _split_parts(arg) is not None:
            data_dir, split = _split_parts(arg)  # type: ignore[misc]
            classes, inputs = _split_inputs(data_dir, split, arg)
            found.data_classes[data_dir] = classes
            found.items.extend(inputs)
        else:
            raise UserError(f"input not found: {path}")
    if not found.items:
        raise UserError("no inputs: name image files, folders or a DIR:SPLIT")
    return found


def iter_batches(inputs: Sequence[ImageInput], batch_size: int, *,
                 resize: bool = True) -> Iterator[ImageBatch]:
    """Decode `inputs` in order, `batch_size` at a time."""
    for start in range(0, len(inputs), batch_size):
        chunk = list(inputs[start:start + batch_size])
        images = np.empty((len(chunk), SIZE, SIZE, 3), dtype=np.uint8)
        resized: list[tuple[int, int] | None] = []
        for i, item in enumerate(chunk):
            if item.pixels is not None:
                images[i] = item.pixels
                resized.append(None)
            else:
                assert item.path is not None
                images[i], was = load_image(item.path, resize=resize)
                resized.append(was)
        yield ImageBatch(chunk, images, resized)


def load_image(path: Path, *, resize: bool = True) -> tuple[np.ndarray, tuple[int, int] | None]:
    """uint8 (32, 32, 3) RGB pixels of an image file, and the (width, height) it was resized
    from (None: it was 32x32 already)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # a phone photo's stored rotation
            rgb = _to_rgb(img)
    except UserError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        raise UserError(f"corrupt image {path}: {_reason(err)}") from None
    if rgb.size == (SIZE, SIZE):
        return np.asarray(rgb, dtype=np.uint8), None
    if not resize:
        raise _not_32(path, rgb.size)
    small = rgb.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.asarray(small, dtype=np.uint8), rgb.size


def _to_rgb(img):  # PIL.Image.Image -> PIL.Image.Image
    """RGB, whatever the mode; 16-bit greyscale scaled to 8 bits (PIL would clip it)."""
    from PIL import Image

    if img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.float32)
        img = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8))
    return img.convert("RGB")


def _checked_file(path: Path, resize: bool) -> ImageInput:
    """`path` opened far enough to know it is a readable image and its size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            size = img.size
    except FileNotFoundError:
        raise UserError(f"input not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"input {path} is a directory that cannot be listed") from None
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied") from None
    except UnidentifiedImageError:
        raise UserError(f"not an image: {path}") from None
    except Exception as err:  # a recognised format with a broken header
        raise UserError(f"corrupt image {path}: {_reason(err)}") from None
    if not resize and size != (SIZE, SIZE):
        raise _not_32(path, size)
    return ImageInput(name=str(path), path=path, size=size)


def _images_in_folder(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in sorted order; hidden entries skipped."""
    def fail(err: OSError) -> None:
        raise UserError(f"cannot read folder {err.filename or folder}: "
                        f"{(err.strerror or str(err)).lower()}")

    if not os.access(folder, os.R_OK | os.X_OK):
        raise UserError(f"cannot read folder {folder}: permission denied")
    files = []
    for root, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in names
                     if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files)


def _split_parts(arg: str) -> tuple[Path, str] | None:
    """(data directory, split) for DIR:SPLIT where DIR exists; None for anything else."""
    head, sep, split = arg.rpartition(SPLIT_SEPARATOR)
    if not sep or not head or not split or not Path(head).is_dir():
        return None
    return Path(head), split


def _split_inputs(data_dir: Path, split: str, arg: str) -> tuple[list[str], list[ImageInput]]:
    """A prepared directory's split as ImageInputs with labels; UserError if it is not one."""
    from ddpcifar.data.beton import read_split
    from ddpcifar.data.meta import META_FILE, SPLITS, load_meta

    if not (data_dir / META_FILE).is_file():
        raise UserError(f"input {arg}: {data_dir} is not a prepared data directory "
                        f"(no {META_FILE})")
    if split not in SPLITS:
        raise UserError(f"input {arg}: unknown split {split!r} (expected one of "
                        f"{', '.join(SPLITS)})")
    meta = load_meta(data_dir, verify_sha256=True)
    images, labels = read_split(data_dir, split)
    classes = list(meta.classes)
    if images.shape[1:] != (SIZE, SIZE, 3):
        raise UserError(f"input {arg}: images of shape {images.shape[1:]}, not 32x32x3")
    inputs = [ImageInput(name=f"{arg}[{i}]", pixels=images[i], label=classes[int(labels[i])])
              for i in range(len(labels))]
    return classes, inputs


def _not_32(path: Path, size: tuple[int, int]) -> UserError:
    return UserError(f"image {path} is {size[0]}x{size[1]}, not {SIZE}x{SIZE} "
                     "(--no-resize refuses to resize)")


def _reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:160] if lines else type(err).__name__
