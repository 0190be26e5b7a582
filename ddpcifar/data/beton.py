"""The FFCV side of the data: the one field declaration, writing a split, reading it back.

FFCV is imported inside the functions that use it, so this module (and the trainer, which
reads splits through `read_split`) imports where FFCV is not installed.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ddpcifar.data.meta import IMAGE_SHAPE, SPLITS, SplitArrays, has_arrays, read_arrays
from ddpcifar.errors import UserError

if TYPE_CHECKING:
    from ffcv.fields import Field


def _import_ffcv() -> None:
    """Load FFCV the safe way (ffcv_import before any ffcv module: keeps torch's threads)."""
    import ddpcifar.data.ffcv_import  # noqa: F401


def beton_fields() -> dict[str, Field]:
    """The beton schema, in file order. raw = lossless 32x32 RGB, so no decode loss."""
    _import_ffcv()
    from ffcv.fields import IntField, RGBImageField

    return {
        "image": RGBImageField(write_mode="raw", max_resolution=32),
        "label": IntField(),
    }


def beton_path(data_dir: str | Path, split: str) -> Path:
    """`<data_dir>/<split>.beton`, refusing unknown split names."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)}): {data_dir}")
    return Path(data_dir) / f"{split}.beton"


class _IndexedSplit:
    """The indexable dataset DatasetWriter asks for; counts what its worker has encoded."""

    def __init__(self, split: SplitArrays) -> None:
        self.images = split.images
        self.labels = split.labels
        # Shared with the forked writer process, polled by the parent for the progress bar.
        self.done = multiprocessing.Value("q", 0, lock=False)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        self.done.value = index + 1  # one writer process, sequential indices
        return self.images[index], int(self.labels[index])


def write_split(
    path: Path, split: SplitArrays, advance: Callable[[int], None] | None = None
) -> None:
    """Write one split to `path` in file order, byte-for-byte reproducibly.

    One writer process: with several, workers take chunks as they come and pages land in the
    file in a timing-dependent order, so two runs would differ. Raw 32x32 images need no
    encoding work, so one process writes 50,000 in about two seconds anyway.
    Inputs must already be validated: an exception inside FFCV's worker process would leave
    the parent waiting forever.
    """
    _import_ffcv()
    from ffcv.writer import DatasetWriter

    dataset = _IndexedSplit(split)
    writer = DatasetWriter(str(path), beton_fields(), num_workers=1)
    stop = threading.Event()

    def poll() -> None:
        reported = 0
        while not stop.wait(0.1):
            now = dataset.done.value
            if advance is not None and now > reported:
                advance(now - reported)
                reported = now
        if advance is not None and len(dataset) > reported:
            advance(len(dataset) - reported)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        # DatasetWriter draws its own tqdm bar on sys.stderr; ours (rich) is already bound to the
        # real stderr, so swallow the duplicate.
        with contextlib.redirect_stderr(io.StringIO()):
            writer.from_indexed_dataset(dataset, chunksize=1000)
    finally:
        stop.set()
        poller.join()


def read_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8 (N,32,32,3) HWC RGB) and labels (int64 (N,)) of a split, in file order.

    From the raw arrays data_prep.py writes beside the betons when they are there (no FFCV, no
    numba start-up); otherwise (a directory prepared before the arrays existed) from the beton,
    read through FFCV's Loader (sequential order, no augmentation), so it checks the file the
    way training reads it. Large batches and two workers keep 50,000 images at about a second.
    Inert for the caller: FFCV sets torch's intra-op thread count to its worker count (which
    made CPU training steps ~20x slower), so it is put back; and a fixed seed keeps FFCV from
    drawing one from numpy's global RNG (an exact resume depends on that stream).
    """
    import torch

    path = beton_path(data_dir, split)
    if has_arrays(data_dir, split):
        return read_arrays(data_dir, split)
    if not path.is_file():
        raise UserError(f"beton file missing: {path}")
    threads = torch.get_num_threads()
    try:
        return _read_all(path)
    finally:
        torch.set_num_threads(threads)


def _read_all(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _import_ffcv()
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(
        str(path),
        batch_size=5000,
        num_workers=2,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        seed=0,
        pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]},
    )
    n = loader.reader.num_samples
    images = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    filled = 0
    for batch_images, batch_labels in loader:
        # The Loader reuses its output buffers between batches, so copy out right away.
        b = len(batch_images)
        images[filled : filled + b] = batch_images
        labels[filled : filled + b] = np.asarray(batch_labels).reshape(-1)
        filled += b
    if filled != n:
        raise UserError(f"beton file ended early ({filled} of {n} samples): {path}")
    return images, labels
