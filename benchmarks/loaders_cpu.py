"""Images/s of one training epoch, FFCV vs in-memory backend, on this machine's CPU.

    .venv/bin/python benchmarks/loaders_cpu.py [--data data/cifar10] [--rounds 5]

Both loaders are built and run once first (warm-up: FFCV's numba compilation, page cache),
then timed epochs alternate between the backends so that load from other processes hits
both alike; the median over rounds is reported. Without a prepared data dir it writes a
synthetic 50,000-image beton (random pixels) and says so. `--normalize` adds a variant of
the FFCV pipeline normalising inside FFCV (NormalizeImage, CPU only) instead of in torch;
`--albumentations` adds the memory backend running the albumentations recipe in workers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddpcifar.data.config import AugmentConfig, DataConfig  # noqa: E402
from ddpcifar.data.loaders import build_loader  # noqa: E402

CIFAR_MEAN = (125.3, 123.0, 113.9)  # used only for the synthetic data
CIFAR_STD = (63.0, 62.1, 66.7)


def synthetic_dir(root: Path, n: int) -> Path:
    """A data dir with random-pixel train/test betons in the converter's format."""
    from ddpcifar.data.beton import write_split
    from ddpcifar.data.meta import SplitArrays

    rng = np.random.default_rng(0)
    for split, size in (("train", n), ("test", n // 5)):
        images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size).astype(np.int64)
        write_split(root / f"{split}.beton", SplitArrays(images, labels))
    return root


def ffcv_normalize_in_pipeline(data_dir: Path, batch_size: int, workers: int, mean, std):
    """The same train pipeline as the ffcv backend but with FFCV's NormalizeImage (CPU only)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import (
        NormalizeImage, RandomHorizontalFlip, RandomTranslate, Squeeze, ToTensor, ToTorchImage,
    )

    image = [SimpleRGBImageDecoder(), RandomHorizontalFlip(), RandomTranslate(padding=4),
             NormalizeImage(np.array(mean), np.array(std), np.float32), ToTensor(), ToTorchImage()]
    return Loader(str(data_dir / "train.beton"), batch_size=batch_size, num_workers=workers,
                  order=OrderOption.RANDOM, seed=0, drop_last=True,
                  pipelines={"image": image, "label": [IntDecoder(), ToTensor(), Squeeze(1)]})


CPU_US: dict[int, float] = {}  # id(loader) -> CPU microseconds per image of its last pass


def epoch_rate(loader) -> float:
    """Images/s of one full pass; each batch's images are touched so lazy work is counted.

    Also records the process's CPU time per image (all threads; DataLoader worker processes
    are not included), which other processes on the machine disturb far less than wall time.
    """
    start, cpu_start, seen = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        images = batch.images if hasattr(batch, "images") else batch[0]
        seen += images.shape[0]
        float(images[0, 0, 0, 0])  # forces the batch to exist
    CPU_US[id(loader)] = (time.process_time() - cpu_start) / seen * 1e6
    return seen / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cifar10"))
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cutout", type=int, default=0, help="basic augmentation's cutout size")
    parser.add_argument("--normalize", action="store_true", help="also time FFCV's NormalizeImage")
    parser.add_argument("--albumentations", action="store_true",
                        help="also time the memory backend with the albumentations recipe in "
                             "--num-workers DataLoader workers")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads for the memory backend's epochs (0: leave as FFCV "
                             "sets them, = num_workers)")
    args = parser.parse_args()

    tmp = None
    if (args.data / "train.beton").is_file():
        from ddpcifar.data.meta import load_meta

        meta = load_meta(args.data)
        data_dir, mean, std, what = args.data, meta.mean, meta.std, f"real data at {args.data}"
    else:
        tmp = tempfile.TemporaryDirectory()
        data_dir, mean, std = synthetic_dir(Path(tmp.name), 50_000), CIFAR_MEAN, CIFAR_STD
        what = "SYNTHETIC 50,000 random images (no prepared data found)"

    augment = AugmentConfig(kind="basic", translate=4, cutout=args.cutout)
    loaders = {}
    for kind in ("ffcv", "memory"):
        t0 = time.perf_counter()
        loaders[kind] = build_loader(
            DataConfig(dir=data_dir, loader=kind, num_workers=args.num_workers), augment,
            split="train", batch_size=args.batch_size, train=True, rank=0, world_size=1, seed=0,
            device=torch.device("cpu"), mean=mean, std=std,
        )
        warm = epoch_rate(loaders[kind])  # numba compile (ffcv), first-touch of memory
        build = time.perf_counter() - t0 - len(loaders[kind]) * args.batch_size / warm
        print(f"{kind}: build {build:.1f} s, warm-up epoch {warm:,.0f} img/s", flush=True)
    if args.albumentations:
        loaders["memory+albumentations"] = build_loader(
            DataConfig(dir=data_dir, loader="memory", num_workers=args.num_workers),
            AugmentConfig(kind="albumentations"), split="train", batch_size=args.batch_size,
            train=True, rank=0, world_size=1, seed=0, device=torch.device("cpu"), mean=mean, std=std,
        )
        epoch_rate(loaders["memory+albumentations"])
    if args.normalize:
        loaders["ffcv+NormalizeImage"] = ffcv_normalize_in_pipeline(
            data_dir, args.batch_size, args.num_workers, mean, std)
        epoch_rate(loaders["ffcv+NormalizeImage"])

    rates: dict[str, list[float]] = {k: [] for k in loaders}
    cpu_us: dict[str, list[float]] = {k: [] for k in loaders}
    for r in range(args.rounds):
        for kind, loader in loaders.items():
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(r + 1)
            if kind.startswith("memory") and args.torch_threads:
                torch.set_num_threads(args.torch_threads)  # FFCV resets it at its next epoch
            rates[kind].append(epoch_rate(loader))
            cpu_us[kind].append(CPU_US[id(loader)])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()), flush=True)

    print(f"\ndata: {what}; batch {args.batch_size}, num_workers {args.num_workers}, "
          f"augment basic (flip, translate 4, cutout {args.cutout}); torch threads for memory: "
          f"{args.torch_threads or args.num_workers}")
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    medians = {k: statistics.median(v) for k, v in rates.items()}
    for kind, rate in medians.items():
        low, high = min(rates[kind]), max(rates[kind])
        print(f"{kind:>21}: median {rate:>9,.0f} img/s  (min {low:,.0f}, max {high:,.0f}); "
              f"CPU {statistics.median(cpu_us[kind]):.1f} us/img in this process")
    print(f"memory / ffcv = {medians['memory'] / medians['ffcv']:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
