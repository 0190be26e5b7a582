"""FFCV backend: FFCV's Loader with explicit pipelines, wrapped in the BatchLoader interface.

FFCV cannot return sample indices, so they are derived from the order the loader is given:
for training that order is ours (`ShardOrder`), for evaluation it is FFCV's distributed
SEQUENTIAL order, which tests/test_loaders.py checks against `eval_positions` with a real
2-process gloo group. The first pass of each Loader spends ~10 s compiling numba code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import ddpcifar.data.ffcv_import  # noqa: F401  (before any ffcv module: keeps torch's threads)
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.operation import Operation
from ffcv.transforms import (
    Cutout, RandomHorizontalFlip, RandomTranslate, Squeeze, ToDevice, ToTensor, ToTorchImage,
)
from ffcv.traversal_order.base import TraversalOrder

from ddpcifar.data.augment import mean_fill
from ddpcifar.data.batch import Batch, Normalizer
from ddpcifar.data.config import AugmentConfig, DataConfig
from ddpcifar.data.orders import (eval_positions, part_positions, subset_positions, to_split_index,
                                  train_order)
from ddpcifar.errors import UserError


class ShardOrder(TraversalOrder):
    """FFCV traversal order giving this rank its shard of the seeded epoch permutation.

    ffcv 1.0.2's Loader calls an `order` that is a TraversalOrder *instance* with the
    loader (`order(loader)`), so the instance binds itself in `__call__`.
    """

    def __init__(self, *, seed: int, rank: int, world_size: int, batch_size: int) -> None:
        self.shard_args = dict(seed=seed, rank=rank, world_size=world_size, batch_size=batch_size)

    def __call__(self, loader: Loader) -> "ShardOrder":
        super().__init__(loader)
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        positions = train_order(len(self.indices), epoch=epoch, **self.shard_args)
        return self.indices[positions]


def image_pipeline(augment: AugmentConfig, mean: Sequence[float], device: torch.device) -> list[Operation]:
    """Decode, augment (train 'basic' only), and hand over a uint8 NCHW channels_last tensor.

    FFCV's RandomHorizontalFlip/RandomTranslate/Cutout draw from numba's own RNG, which
    cannot be seeded from here: FFCV-augmented epochs are not reproducible.
    No Convert(float32) here: the normaliser converts and normalises in one pass, and the
    host-to-device copy moves uint8, a quarter of the bytes. FFCV allocates its host batch
    buffers in pinned memory, so ToDevice(non_blocking=True) is a true asynchronous copy that
    overlaps the previous step; ToTorchImage(channels_last=True) is a free permute of the NHWC
    buffer (the normaliser makes the layout model.channels_last asks for).
    """
    ops: list[Operation] = [SimpleRGBImageDecoder()]
    if augment.kind == "basic":
        if augment.flip_p > 0:
            ops.append(RandomHorizontalFlip(flip_prob=augment.flip_p))
        if augment.translate > 0:
            ops.append(RandomTranslate(padding=augment.translate, fill=(0, 0, 0)))
        if augment.cutout > 0:
            ops.append(Cutout(augment.cutout, fill=mean_fill(mean)))
    ops += [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(channels_last=True)]
    return ops


def label_pipeline(device: torch.device) -> list[Operation]:
    """int labels -> (N,) tensor on the device."""
    return [IntDecoder(), ToTensor(), Squeeze(1), ToDevice(device, non_blocking=True)]


class FFCVBatchLoader:
    """BatchLoader over one .beton split using FFCV."""

    def __init__(
        self,
        path: Path,
        data: DataConfig,
        augment: AugmentConfig,
        *,
        part: str = "train",
        batch_size: int,
        train: bool,
        rank: int,
        world_size: int,
        seed: int,
        device: torch.device,
        normalize: Normalizer,
        mean: Sequence[float],
    ) -> None:
        self.batch_size = batch_size
        self.train = train
        self.normalize = normalize
        self.device = device
        self.epoch = 0
        total = _num_samples(path)
        positions = subset_positions(total, data.max_samples)
        if data.val_size and part != "test":  # stratified by class: the labels are needed
            from ddpcifar.data.beton import read_split

            _, labels = read_split(data.dir, "train")
            positions = part_positions(labels, part=part, max_samples=data.max_samples,
                                       val_size=data.val_size, val_seed=data.val_seed)
        n = total if positions is None else len(positions)
        common = dict(
            batch_size=batch_size,
            seed=seed,  # given no seed, FFCV draws one from the global numpy RNG
            num_workers=max(1, data.num_workers),
            os_cache=data.os_cache,
            indices=positions,
            pipelines={"image": image_pipeline(augment, mean, device), "label": label_pipeline(device)},
        )
        threads = torch.get_num_threads()  # FFCV sets torch's thread count to num_workers
        if train:
            self.order = ShardOrder(seed=seed, rank=rank, world_size=world_size, batch_size=batch_size)
            self.loader = Loader(str(path), order=self.order, drop_last=True, **common)
            self._len = len(self.loader)
            self._num_samples = self._len * batch_size
        else:
            distributed = world_size > 1
            if distributed:
                _check_process_group(rank, world_size)
            self.loader = Loader(
                str(path), order=OrderOption.SEQUENTIAL, distributed=distributed, drop_last=False, **common
            )
            _, within = eval_positions(n, rank=rank, world_size=world_size)
            self.eval_index = to_split_index(within, positions)
            self._len = -(-len(self.eval_index) // batch_size)
            self._num_samples = int((self.eval_index >= 0).sum())
            if len(self.loader) != self._len:  # our derivation no longer matches FFCV's order
                raise RuntimeError(f"FFCV eval order has {len(self.loader)} batches, expected {self._len}")
        torch.set_num_threads(threads)

    def __len__(self) -> int:
        return self._len

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _index(self, epoch: int) -> np.ndarray:
        if self.train:
            return self.order.sample_order(epoch).astype(np.int64)
        return self.eval_index

    def __iter__(self) -> Iterator[Batch]:
        # One host-to-device copy per epoch, not one per step (training never reads it anyway).
        index = torch.from_numpy(self._index(self.epoch)).to(self.device, non_blocking=True)
        self.loader.next_epoch = self.epoch  # the epoch FFCV passes to sample_order
        threads = torch.get_num_threads()
        start = 0
        for images, labels in self.loader:
            if start == 0:
                # FFCV's epoch thread set torch's (process-wide) thread count to num_workers
                # before producing this first batch; give the training loop its own back.
                torch.set_num_threads(threads)
            stop = start + images.shape[0]
            yield Batch(
                images=self.normalize(images),
                # FFCV reuses its output buffers a few batches later: keep our own copy.
                labels=labels.to(torch.int64, copy=True),
                index=index[start:stop],
            )
            start = stop


def _num_samples(path: Path) -> int:
    from ffcv.reader import Reader

    return int(Reader(str(path)).num_samples)


def _check_process_group(rank: int, world_size: int) -> None:
    """FFCV's distributed order reads rank and world size from torch.distributed: make sure they agree."""
    if not (dist.is_available() and dist.is_initialized()):
        raise UserError(
            f"FFCV evaluation with world_size={world_size} needs an initialised torch.distributed group"
        )
    if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise UserError(
            f"rank/world_size ({rank}, {world_size}) disagree with torch.distributed "
            f"({dist.get_rank()}, {dist.get_world_size()})"
        )
