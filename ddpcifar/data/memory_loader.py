"""In-memory backend: the whole split as one uint8 tensor on the device (CIFAR-10 is 150 MB).

Each batch is one gather from that tensor (augment.PixelTable), its flips, shifts and cutout
drawn from a torch.Generator seeded by (seed, epoch, rank): an epoch is a pure function of
those, so a resumed run replays it exactly. The albumentations recipe runs instead on numpy images in
DataLoader workers, each worker of each rank with its own stream (seed, rank, epoch, worker).
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ddpcifar.data.augment import PixelTable, albumentations_pipeline, alternating_flips, mean_fill
from ddpcifar.data.batch import Batch, Normalizer
from ddpcifar.data.config import AugmentConfig, DataConfig
from ddpcifar.data.orders import derive_seed, eval_positions, part_positions, to_split_index, train_order


_FLIP_STREAM = 0xF11B  # mixed into the seed of the alternating-flip draw


class MemoryBatchLoader:
    """BatchLoader over one split held in memory (on the GPU when `device` is one)."""

    def __init__(
        self,
        data: DataConfig,
        augment: AugmentConfig,
        *,
        split: str,
        part: str | None = None,
        batch_size: int,
        train: bool,
        rank: int,
        world_size: int,
        seed: int,
        device: torch.device,
        normalize: Normalizer,
        mean: Sequence[float],
    ) -> None:
        # The raw arrays when the directory has them (no FFCV needed), else the beton; file order.
        from ddpcifar.data.beton import read_split

        images, labels = read_split(data.dir, split)  # leaves torch threads and global RNGs alone
        self.positions = part_positions(labels, part=part or split, max_samples=data.max_samples,
                                        val_size=data.val_size, val_seed=data.val_seed)
        if self.positions is not None:
            images, labels = images[self.positions], labels[self.positions]
        self.n = len(labels)
        self.augment = augment
        self.batch_size = batch_size
        self.train = train
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.device = device
        self.normalize = normalize
        self.num_workers = data.num_workers
        self.epoch = 0
        if train and augment.kind == "albumentations":
            # Workers augment numpy HWC images; only finished batches go to the device.
            self.host_images, self.host_labels = np.ascontiguousarray(images), labels.astype(np.int64)
            self.pipeline = albumentations_pipeline(augment, mean)
        else:
            # (N,H,W,3) padded for the largest translation: 240 MB for CIFAR-10 train at 4 px.
            pad = augment.translate if augment.kind == "basic" else 0
            on_device = torch.from_numpy(images).to(device)
            self.table = PixelTable.build(on_device, pad, augment.translate_pad, mean_fill(mean))
            self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
            self.base_flips = None
            if train and augment.kind == "basic" and augment.flip_mode == "alternating":
                # Seeded by the run seed alone: the same on every rank and in every epoch.
                self.base_flips = alternating_flips(self.n, augment.flip_p,
                                                    derive_seed(seed, _FLIP_STREAM), device)
        if train:
            self._len = (self.n // world_size) // batch_size
            self._num_samples = self._len * batch_size
        else:
            self.eval_samples, self.eval_index = eval_positions(self.n, rank=rank, world_size=world_size)
            self._len = -(-len(self.eval_samples) // batch_size)
            self._num_samples = int((self.eval_index >= 0).sum())

    def __len__(self) -> int:
        return self._len

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        if not self.train:
            return self._iter_tensor(self.eval_samples, self.eval_index, gen=None)
        order = train_order(
            self.n, seed=self.seed, epoch=self.epoch, rank=self.rank,
            world_size=self.world_size, batch_size=self.batch_size,
        )
        if self.augment.kind == "albumentations":
            return self._iter_albumentations(order)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, self.epoch, self.rank))
        return self._iter_tensor(order, order, gen)

    def _iter_tensor(
        self, samples: np.ndarray, index: np.ndarray, gen: torch.Generator | None
    ) -> Iterator[Batch]:
        samples_t = torch.from_numpy(samples).to(self.device)
        index_t = torch.from_numpy(to_split_index(index, self.positions)).to(self.device)
        for start in range(0, len(samples), self.batch_size):
            take = samples_t[start : start + self.batch_size]
            cfg = self.augment if gen is not None else None  # never augment from the global RNG
            mirror = None
            if cfg is not None and self.base_flips is not None:
                mirror = self.base_flips[take] ^ bool(self.epoch % 2)
            images = self.table.gather(self.table.index(take, cfg, gen, mirror))  # (B,3,H,W) uint8
            yield Batch(self.normalize(images), self.labels[take], index_t[start : start + self.batch_size])

    def _iter_albumentations(self, order: np.ndarray) -> Iterator[Batch]:
        batches = order.reshape(-1, self.batch_size)
        epoch_data = AlbumentationsEpoch(
            self.host_images, self.host_labels, self.pipeline, batches,
            seed=self.seed, rank=self.rank, epoch=self.epoch,
        )
        if self.num_workers == 0:
            epoch_data.seed_stream(worker_id=0)
        loader = DataLoader(
            epoch_data,
            batch_size=None,  # each item is already a batch: one IPC message per batch
            num_workers=self.num_workers,
            worker_init_fn=_seed_worker,
            # Without a generator DataLoader draws its base seed from the global torch RNG,
            # which would change every later global draw (and break exact resume).
            generator=torch.Generator().manual_seed(derive_seed(self.seed, self.rank, self.epoch)),
            pin_memory=self.device.type == "cuda",
        )
        for images, labels, index in loader:
            images = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            yield Batch(
                self.normalize(images),
                labels.to(self.device, non_blocking=True),
                torch.from_numpy(to_split_index(index.numpy(), self.positions)).to(self.device),
            )


class AlbumentationsEpoch(Dataset):
    """One epoch of albumentations-augmented batches; item i is batch i of this rank's order."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, pipeline, batches: np.ndarray,
        *, seed: int, rank: int, epoch: int,
    ) -> None:
        self.images, self.labels, self.pipeline, self.batches = images, labels, pipeline, batches
        self.seed, self.rank, self.epoch = seed, rank, epoch

    def seed_stream(self, worker_id: int) -> None:
        """Give this process's pipeline its own stream: f(seed, rank, epoch, worker_id)."""
        seq = np.random.SeedSequence([self.seed, self.rank, self.epoch, worker_id])
        py_seed = int(seq.spawn(1)[0].generate_state(1)[0])
        self.pipeline.set_random_state(np.random.default_rng(seq), random.Random(py_seed))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        take = self.batches[i]
        out = np.stack([self.pipeline(image=self.images[j])["image"] for j in take])
        labels, index = self.labels[take], take.astype(np.int64)
        return torch.from_numpy(out), torch.from_numpy(labels), torch.from_numpy(index)


def _seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: runs in each fresh worker process (workers restart each epoch)."""
    import cv2

    # The worker is forked: OpenCV's thread pool, if the parent ever used it, is not usable in
    # the child. One-image 32x32 ops gain nothing from it anyway.
    cv2.setNumThreads(0)
    info = get_worker_info()
    assert info is not None  # only ever called inside a worker
    info.dataset.seed_stream(worker_id)
