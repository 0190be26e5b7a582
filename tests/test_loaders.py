"""Both loader backends against the documented orders, on CPU, with real FFCV and gloo.

The data here encodes each sample's position: label = position, and the red/green planes
of the image hold position % 256 and position // 256. So any batch can be checked against
its `index` without trusting the loader. FFCV compiles numba code per Loader (seconds),
so loaders are built once per module and shared.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pydantic import ValidationError

from ddpcifar.data.batch import Batch
from ddpcifar.data.beton import write_split
from ddpcifar.data.config import AugmentConfig, DataConfig, check_compatible
from ddpcifar.data.loaders import build_loader
from ddpcifar.data.meta import SplitArrays
from ddpcifar.data.orders import eval_positions, train_order
from ddpcifar.errors import UserError

N_TRAIN, N_TEST = 203, 101  # odd: neither splits evenly over 2 ranks or into batches
MEAN, STD = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
CPU = torch.device("cpu")


def encoded_split(n: int, seed: int) -> SplitArrays:
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[..., 0] = np.arange(n)[:, None, None] % 256
    images[..., 1] = np.arange(n)[:, None, None] // 256
    return SplitArrays(images=images, labels=np.arange(n, dtype=np.int64))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("encoded")
    write_split(root / "train.beton", encoded_split(N_TRAIN, 0))
    write_split(root / "test.beton", encoded_split(N_TEST, 1))
    return root


def make(data_dir: Path, loader: str, *, split: str = "test", train: bool = False, batch_size: int = 25,
         rank: int = 0, world_size: int = 1, seed: int = 0, augment: AugmentConfig | None = None, **data_kw):
    return build_loader(
        DataConfig(dir=data_dir, loader=loader, **{"num_workers": 1, **data_kw}),
        augment or AugmentConfig(kind="none"),
        split=split, batch_size=batch_size, train=train, rank=rank, world_size=world_size,
        seed=seed, device=CPU, mean=MEAN, std=STD,
    )


def pixels(batch: Batch) -> torch.Tensor:
    """Undo the normalisation: (N,3,H,W) float pixel values 0..255."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (batch.images * std + mean).round()


def encoded_position(batch: Batch) -> torch.Tensor:
    """The sample position written into each un-augmented image."""
    px = pixels(batch)
    return (px[:, 0, 0, 0] + 256 * px[:, 1, 0, 0]).long()


def collect(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return (torch.cat([b.index for b in batches]), torch.cat([b.labels for b in batches]),
            torch.cat([encoded_position(b) for b in batches]))


@pytest.fixture(scope="module")
def ffcv_eval(data_dir: Path):
    return make(data_dir, "ffcv")


@pytest.fixture(scope="module")
def ffcv_train_ranks(data_dir: Path):
    return [make(data_dir, "ffcv", split="train", train=True, batch_size=16, rank=r, world_size=2)
            for r in range(2)]


# --- the orders themselves -------------------------------------------------------------


def test_eval_positions_match_torch_distributed_sampler() -> None:
    from torch.utils.data import DistributedSampler

    for n, w in [(101, 2), (10, 3), (7, 8), (12, 4)]:
        for r in range(w):
            samples, index = eval_positions(n, rank=r, world_size=w)
            assert samples.tolist() == list(DistributedSampler(range(n), w, r, shuffle=False))
            assert np.array_equal(index[index >= 0], samples[index >= 0])


def test_train_order_shards_are_disjoint_equal_and_seeded() -> None:
    kw = dict(seed=3, world_size=3, batch_size=8)
    shards = [train_order(100, epoch=0, rank=r, **kw) for r in range(3)]
    assert all(len(s) == 32 for s in shards)  # 100 // 3 = 33 per rank -> 4 full batches
    assert len(np.unique(np.concatenate(shards))) == 96
    assert np.array_equal(shards[1], train_order(100, epoch=0, rank=1, **kw))
    assert not np.array_equal(shards[1], train_order(100, epoch=1, rank=1, **kw))
    assert not np.array_equal(shards[1], train_order(100, epoch=0, rank=1, **{**kw, "seed": 4}))


# --- FFCV backend -----------------------------------------------------------------------


def test_ffcv_eval_batches_are_normalised_channels_last_and_complete(ffcv_eval) -> None:
    batches = list(ffcv_eval)
    assert len(batches) == len(ffcv_eval) == 5 and ffcv_eval.num_samples == N_TEST
    first = batches[0]
    assert first.images.shape == (25, 3, 32, 32) and first.images.dtype == torch.float32
    assert first.images.is_contiguous(memory_format=torch.channels_last)
    assert first.labels.dtype == torch.int64 and first.index.dtype == torch.int64
    assert batches[-1].images.shape[0] == 1  # no drop_last in evaluation
    index, labels, encoded = collect(ffcv_eval)
    assert index.tolist() == list(range(N_TEST))
    assert torch.equal(labels, index) and torch.equal(encoded, index)
    # Normalisation used the caller's constants: channel means map back to pixel values.
    assert abs(float(pixels(first)[:, 2].mean()) - 127.5) < 3


def _ffcv_eval_rank(rank: int, world_size: int, port: int, data_dir: Path, out_dir: Path) -> None:
    """One process of a real gloo group: FFCV distributed eval, results saved for the parent."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        loader = make(data_dir, "ffcv", rank=rank, world_size=world_size)
        index, labels, encoded = collect(loader)
        torch.save({"index": index, "labels": labels, "encoded": encoded, "len": len(loader),
                    "num_samples": loader.num_samples}, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ffcv_distributed_eval_indices_match_ffcv_order(data_dir: Path, tmp_path: Path) -> None:
    """FFCV cannot report indices; prove the derived ones against what it actually loaded."""
    # spawn, not fork: by now this process runs FFCV and torch threads, and a child forked
    # while one of them holds a lock deadlocks (it hung the full suite in CI).
    mp.start_processes(_ffcv_eval_rank, args=(2, free_port(), data_dir, tmp_path), nprocs=2,
                       join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    real = torch.cat([r["index"][r["index"] >= 0] for r in results])
    assert sorted(real.tolist()) == list(range(N_TEST))  # every sample exactly once
    for r in results:
        keep = r["index"] >= 0
        assert torch.equal(r["labels"][keep], r["index"][keep])
        assert torch.equal(r["encoded"][keep], r["index"][keep])
        assert r["len"] == 3 and len(r["index"]) == 51
    assert [r["num_samples"] for r in results] == [51, 50]
    padding = results[1]["index"] == -1
    assert padding.sum() == 1 and results[1]["labels"][padding].tolist() == [0]  # duplicate of sample 0


def test_ffcv_eval_without_process_group_is_refused(data_dir: Path) -> None:
    with pytest.raises(UserError, match="torch.distributed"):
        make(data_dir, "ffcv", rank=0, world_size=2)


def test_ffcv_train_shards_follow_the_seeded_order(ffcv_train_ranks) -> None:
    seen = []
    for rank, loader in enumerate(ffcv_train_ranks):
        loader.set_epoch(0)
        index, labels, encoded = collect(loader)
        assert len(loader) == 6 and loader.num_samples == 96  # 203 // 2 = 101 -> 6 batches of 16
        expected = train_order(N_TRAIN, seed=0, epoch=0, rank=rank, world_size=2, batch_size=16)
        assert index.tolist() == expected.tolist()
        assert torch.equal(labels, index) and torch.equal(encoded, index)
        seen.append(set(index.tolist()))
    assert not seen[0] & seen[1]
    loader = ffcv_train_ranks[0]
    loader.set_epoch(0)
    epoch0 = collect(loader)[0]
    loader.set_epoch(1)
    epoch1, labels1, _ = collect(loader)
    assert torch.equal(labels1, epoch1) and set(epoch1.tolist()) != seen[0]
    loader.set_epoch(0)
    assert torch.equal(collect(loader)[0], epoch0)  # replaying an epoch replays its order


def test_ffcv_basic_augmentation_changes_images(data_dir: Path) -> None:
    cfg = AugmentConfig(kind="basic", translate=4, cutout=8)
    loader = make(data_dir, "ffcv", split="train", train=True, batch_size=32, augment=cfg)
    batch = next(iter(loader))
    assert batch.images.shape == (32, 3, 32, 32)
    assert batch.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch.labels, batch.index)
    plain = encoded_split(N_TRAIN, 0).images[batch.index.numpy()]
    changed = (pixels(batch).permute(0, 2, 3, 1).numpy() != plain).any(axis=(1, 2, 3))
    assert changed.all()  # an 8x8 mean-filled square alone changes every image


# --- memory backend ---------------------------------------------------------------------


def test_memory_eval_matches_ffcv_eval(data_dir: Path, ffcv_eval) -> None:
    memory = make(data_dir, "memory")
    assert len(memory) == len(ffcv_eval) and memory.num_samples == ffcv_eval.num_samples
    for m, f in zip(memory, ffcv_eval):
        assert torch.equal(m.index, f.index) and torch.equal(m.labels, f.labels)
        assert torch.equal(m.images, f.images)
        assert m.images.is_contiguous(memory_format=torch.channels_last)


def test_memory_eval_under_ranks_covers_the_split_once(data_dir: Path) -> None:
    world_size = 2  # 101 samples, batches of 10: a padded, partial last batch on rank 1
    real, counts = [], []
    for rank in range(world_size):
        loader = make(data_dir, "memory", rank=rank, world_size=world_size, batch_size=10)
        index, labels, encoded = collect(loader)
        keep = index >= 0
        assert torch.equal(labels[keep], index[keep]) and torch.equal(encoded[keep], index[keep])
        assert loader.num_samples == int(keep.sum())
        counts.append(len(index))
        real.append(index[keep])
    assert len(set(counts)) == 1  # padded: same batch count on every rank
    assert sorted(torch.cat(real).tolist()) == list(range(N_TEST))


def test_memory_train_shards_match_ffcv_and_are_disjoint(data_dir: Path, ffcv_train_ranks) -> None:
    shards = []
    for rank in range(2):
        memory = make(data_dir, "memory", split="train", train=True, batch_size=16, rank=rank, world_size=2)
        for epoch in (0, 3):
            memory.set_epoch(epoch)
            ffcv_train_ranks[rank].set_epoch(epoch)
            index, labels, encoded = collect(memory)
            assert torch.equal(labels, index) and torch.equal(encoded, index)
            assert torch.equal(index, collect(ffcv_train_ranks[rank])[0])
        shards.append(set(index.tolist()))
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 96


def test_memory_augmentation_is_seeded_per_epoch_and_rank(data_dir: Path) -> None:
    cfg = AugmentConfig(kind="basic", translate=4, cutout=8)
    loaders = {
        (seed, rank): make(data_dir, "memory", split="train", train=True, batch_size=32, seed=seed,
                           rank=rank, world_size=2, augment=cfg)
        for seed, rank in [(0, 0), (0, 1), (1, 0)]
    }

    def first_batch(seed: int, epoch: int, rank: int = 0) -> Batch:
        loader = loaders[(seed, rank)]
        loader.set_epoch(epoch)
        return next(iter(loader))

    a = first_batch(0, 0)
    plain = encoded_split(N_TRAIN, 0).images[a.index.numpy()]
    assert (pixels(a).permute(0, 2, 3, 1).numpy() != plain).any(axis=(1, 2, 3)).all()
    assert not torch.equal(a.index, first_batch(0, 1).index)
    assert not torch.equal(a.index, first_batch(0, 0, rank=1).index)
    assert torch.equal(a.images, first_batch(0, 0).images)  # replaying the epoch replays the pixels
    assert not torch.equal(a.images, first_batch(1, 0).images)


def test_max_samples_caps_both_backends_without_global_side_effects(data_dir: Path) -> None:
    np.random.seed(11)
    torch.manual_seed(11)
    numpy_next, torch_next = np.random.rand(), torch.rand(1)
    np.random.seed(11)
    torch.manual_seed(11)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # FFCV would set it to num_workers=2
    try:
        for kind in ("memory", "ffcv"):
            loader = make(data_dir, kind, max_samples=30, batch_size=8, num_workers=2)
            assert torch.get_num_threads() == 3
            index, labels, _ = collect(loader)
            # An evenly spaced subset (every k-th sample), indices naming split positions.
            expected = [i * N_TEST // 30 for i in range(30)]
            assert index.tolist() == expected and torch.equal(labels, index)
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    # Exact resume needs the global generators untouched by building and iterating loaders.
    assert np.random.rand() == numpy_next and torch.equal(torch.rand(1), torch_next)


# --- albumentations in DataLoader workers -------------------------------------------------


@pytest.fixture(scope="module")
def same_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 copies of one image: any difference between outputs comes from the random stream."""
    root = tmp_path_factory.mktemp("same")
    image = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    split = SplitArrays(images=np.repeat(image, 32, axis=0), labels=np.zeros(32, dtype=np.int64))
    write_split(root / "train.beton", split)
    return root


@pytest.mark.slow
def test_albumentations_workers_and_ranks_have_distinct_reproducible_streams(same_image_dir: Path) -> None:
    cfg = AugmentConfig(kind="albumentations", affine_p=1.0)

    def epoch_batches(seed: int, rank: int, epoch: int = 0) -> list[torch.Tensor]:
        loader = build_loader(
            DataConfig(dir=same_image_dir, loader="memory", num_workers=2), cfg, split="train",
            batch_size=4, train=True, rank=rank, world_size=2, seed=seed, device=CPU, mean=MEAN, std=STD,
        )
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == 4
        assert batches[0].images.is_contiguous(memory_format=torch.channels_last)
        return [b.images for b in batches]

    # Batches 0 and 1 come from worker 0 and worker 1 of each rank.
    outputs = {(rank, i): b for rank in range(2) for i, b in enumerate(epoch_batches(0, rank)[:2])}
    keys = list(outputs)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not torch.equal(outputs[a], outputs[b]), f"{a} and {b} repeat the same stream"
    again = epoch_batches(0, 1)
    assert torch.equal(again[0], outputs[(1, 0)]) and torch.equal(again[1], outputs[(1, 1)])
    assert not torch.equal(epoch_batches(0, 1, epoch=1)[0], outputs[(1, 0)])


def test_albumentations_in_process_matches_one_worker(same_image_dir: Path) -> None:
    cfg = AugmentConfig(kind="albumentations")

    def first(workers: int) -> torch.Tensor:
        loader = build_loader(
            DataConfig(dir=same_image_dir, num_workers=workers), cfg, split="train", batch_size=8,
            train=True, rank=0, world_size=1, seed=1, device=CPU, mean=MEAN, std=STD,
        )
        return next(iter(loader)).images

    assert torch.equal(first(0), first(1))


# --- configuration errors ---------------------------------------------------------------


def test_config_rejects_unknown_keys_and_out_of_range_values() -> None:
    with pytest.raises(ValidationError, match=r"(?s)workers.*Extra inputs are not permitted"):
        DataConfig(workers=2)
    with pytest.raises(ValidationError, match=r"(?s)num_workers.*greater than or equal to 0.*-1"):
        DataConfig(num_workers=-1)
    with pytest.raises(ValidationError, match=r"(?s)loader.*'ffcv' or 'memory'.*'dali'"):
        DataConfig(loader="dali")
    with pytest.raises(ValidationError, match=r"(?s)flip_p.*less than or equal to 1.*1.5"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(ValidationError, match=r"(?s)cutout.*less than or equal to 32.*40"):
        AugmentConfig(cutout=40)
    with pytest.raises(ValidationError, match=r"(?s)dir.*prepared data directory"):
        DataConfig(dir="")


def test_config_round_trips_through_json() -> None:
    augment = AugmentConfig(kind="albumentations", rotate=10)
    assert AugmentConfig.model_validate_json(augment.model_dump_json()) == augment
    data = DataConfig(dir="x/y", max_samples=10)
    assert DataConfig.model_validate_json(data.model_dump_json()) == data


def test_backend_augment_combinations_are_checked(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="augment.kind='albumentations' needs data.loader='memory'"):
        check_compatible(DataConfig(loader="ffcv"), AugmentConfig(kind="albumentations"))
    with pytest.raises(UserError, match="augment.translate_pad='reflect' needs data.loader='memory'"):
        make(data_dir, "ffcv", augment=AugmentConfig(translate_pad="reflect"))
    check_compatible(DataConfig(loader="memory"), AugmentConfig(kind="albumentations"))


def test_build_loader_refuses_bad_arguments(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="prepared data not found.*train.beton"):
        make(tmp_path, "memory", split="train")
    with pytest.raises(UserError, match="unknown split 'valid'; expected one of train, test, val"):
        make(data_dir, "memory", split="valid")
    with pytest.raises(UserError, match="split 'val' needs a validation split: set data.val_size"):
        make(data_dir, "memory", split="val")
    with pytest.raises(UserError, match="rank must be in"):
        make(data_dir, "memory", rank=2, world_size=2)
    with pytest.raises(UserError, match="too small for one full batch"):
        make(data_dir, "memory", split="train", train=True, batch_size=128, world_size=2)


# --- the converter's output -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "ffcv"])
def test_prepared_data_reads_back_exactly_with_meta_constants(prepared_data, kind: str) -> None:
    """The converter's data dir (session fixture), normalised with its meta.json mean/std."""
    from ddpcifar.data.meta import load_meta

    meta = load_meta(prepared_data.data_dir)
    loader = build_loader(
        DataConfig(dir=prepared_data.data_dir, loader=kind, num_workers=1), AugmentConfig(),
        split="test", batch_size=64, train=False, rank=0, world_size=1, seed=0, device=CPU,
        mean=meta.mean, std=meta.std,
    )
    batches = list(loader)
    images = torch.cat([b.images for b in batches])
    mean, std = torch.tensor(meta.mean).view(1, 3, 1, 1), torch.tensor(meta.std).view(1, 3, 1, 1)
    pixels_hwc = (images * std + mean).round().permute(0, 2, 3, 1)
    assert np.array_equal(pixels_hwc.numpy().astype(np.uint8), prepared_data.test.images)
    assert torch.cat([b.labels for b in batches]).tolist() == prepared_data.test.labels.tolist()
    # The meta constants really normalise this split: per-channel mean ~0, std ~1.
    assert images.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


# --- GPU (skipped without CUDA; run by benchmarks/gpu_check.sh on a GPU machine) ------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["memory", "ffcv"])
def test_cuda_batches_match_cpu_and_stay_on_the_gpu(data_dir: Path, ffcv_eval, kind: str) -> None:
    cuda = torch.device("cuda")
    gpu = build_loader(DataConfig(dir=data_dir, loader=kind, num_workers=1), AugmentConfig(),
                       split="test", batch_size=25, train=False, rank=0, world_size=1, seed=0,
                       device=cuda, mean=MEAN, std=STD)
    for g, c in zip(gpu, ffcv_eval):
        assert g.images.device.type == g.labels.device.type == g.index.device.type == "cuda"
        assert g.images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(g.index.cpu(), c.index) and torch.equal(g.labels.cpu(), c.labels)
        assert torch.allclose(g.images.cpu(), c.images, atol=1e-5)
    train = build_loader(DataConfig(dir=data_dir, loader=kind, num_workers=1), AugmentConfig(cutout=8),
                         split="train", batch_size=32, train=True, rank=0, world_size=1, seed=0,
                         device=cuda, mean=MEAN, std=STD)
    first = [next(iter(train)).images for _ in range(2)]
    assert first[0].device.type == "cuda"
    if kind == "memory":  # seeded on the device generator; FFCV's augmentation is not seedable
        assert torch.equal(first[0], first[1])


def test_the_airbench_augmentation_follows_the_seed(data_dir: Path) -> None:
    """train.seed reaches the order, the alternating flips and the translations: another seed
    changes each of them for the same image, the same seed replays them."""
    cfg = AugmentConfig(kind="basic", flip_mode="alternating", translate=2, translate_pad="reflect")

    def epoch(seed: int) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        loader = make(data_dir, "memory", split="train", train=True, batch_size=50, seed=seed,
                      augment=cfg)
        loader.set_epoch(0)
        batches = list(loader)
        order = torch.cat([b.index for b in batches])
        views = {int(i): img for b in batches for i, img in zip(b.index, pixels(b))}
        return order, views

    order0, views0 = epoch(0)
    order1, views1 = epoch(1)
    again, views_again = epoch(0)
    assert torch.equal(order0, again) and all(torch.equal(views0[i], views_again[i]) for i in views0)
    assert not torch.equal(order0, order1)
    common = sorted(views0.keys() & views1.keys())
    plain = torch.from_numpy(encoded_split(N_TRAIN, 0).images).permute(0, 3, 1, 2).float()
    flipped = {s: [_is_mirrored(v[i], plain[i]) for i in common]
               for s, v in ((0, views0), (1, views1))}
    differ = sum(not torch.equal(views0[i], views1[i]) for i in common)
    assert differ > 0.9 * len(common)  # translations (25 offsets) and flips both drawn anew
    assert flipped[0] != flipped[1]


def _is_mirrored(view: torch.Tensor, image: torch.Tensor) -> bool:
    """Whether a translated view of `image` is its mirror: the blue plane (random noise) of the
    view's centre 28x28 matches the mirrored image at some offset within 2 pixels."""
    centre = view[2, 2:30, 2:30]
    for mirrored in (False, True):
        source = image[2].flip(-1) if mirrored else image[2]
        for dy in range(5):
            for dx in range(5):
                if torch.equal(centre, source[dy:dy + 28, dx:dx + 28]):
                    return mirrored
    raise AssertionError("the view is no translation of the image")
