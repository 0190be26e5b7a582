"""Batched tensor augmentations and the albumentations recipe, on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpcifar.data.augment import PixelTable, albumentations_pipeline, mean_fill
from ddpcifar.data.config import AugmentConfig


FILL = (250, 251, 252)  # never present in `batch`, so filled pixels are recognisable


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    """64 random uint8 images in [0, 200), HWC as the memory backend stores them."""
    return torch.randint(0, 200, (64, 32, 32, 3), generator=gen(0), dtype=torch.uint8)


def augment(images: torch.Tensor, seed: int, **cfg) -> torch.Tensor:
    """The memory backend's path: padded table, per-pixel source index, one gather. -> (N,3,H,W)."""
    config = AugmentConfig(kind="basic", **{"flip_p": 0.0, "translate": 0, "cutout": 0, **cfg})
    table = PixelTable.build(images, config.translate, config.translate_pad, FILL)
    return table.gather(table.index(torch.arange(images.shape[0]), config, gen(seed)))


def nchw(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2)


def test_without_augmentation_the_gather_returns_the_images(batch: torch.Tensor) -> None:
    out = augment(batch, 0)
    assert out.dtype == torch.uint8 and out.shape == (64, 3, 32, 32)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, nchw(batch))
    for mode in ("zero", "reflect"):
        table = PixelTable.build(batch, 3, mode, FILL)  # padding alone changes nothing
        picked = table.gather(table.index(torch.tensor([5, 2]), None, None))
        assert torch.equal(picked, nchw(batch[[5, 2]]))


def test_flip_mirrors_about_half_of_the_images(batch: torch.Tensor) -> None:
    out, x = augment(batch, 1, flip_p=0.5), nchw(batch)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped ^ kept).all())  # every image is either mirrored or untouched
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(augment(batch, 1, flip_p=1.0), x.flip(-1))


def find_shift(out: torch.Tensor, padded: torch.Tensor, pad: int) -> tuple[int, int] | None:
    """The crop offset of `padded` that reproduces `out`, if any."""
    h, w = out.shape[-2:]
    for y in range(2 * pad + 1):
        for x in range(2 * pad + 1):
            if torch.equal(padded[:, y : y + h, x : x + w], out):
                return y - pad, x - pad
    return None


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_translate_is_pad_and_crop(batch: torch.Tensor, mode: str) -> None:
    pad = 4
    out = augment(batch, 2, translate=pad, translate_pad=mode)
    # Reference: torch's own padding (reflect needs float), then every possible crop.
    padded = F.pad(nchw(batch).float(), (pad,) * 4, mode="constant" if mode == "zero" else "reflect")
    shifts = [find_shift(o, p.to(torch.uint8), pad) for o, p in zip(out, padded)]
    assert all(s is not None for s in shifts), "an output is not a crop of the padded image"
    assert len(set(shifts)) > 20  # shifts are drawn per image, not per batch
    assert any(s != (0, 0) for s in shifts)


def test_flip_then_translate_is_a_crop_of_the_padded_mirror(batch: torch.Tensor) -> None:
    out = augment(batch, 4, flip_p=1.0, translate=3)
    padded = F.pad(nchw(batch).flip(-1), (3,) * 4)
    assert all(find_shift(o, p, 3) is not None for o, p in zip(out, padded))


def test_cutout_fills_exactly_one_square(batch: torch.Tensor) -> None:
    out = augment(batch, 3, cutout=8)
    fill = torch.tensor(FILL, dtype=torch.uint8).view(3, 1, 1)
    corners = set()
    for o, x in zip(out, nchw(batch)):
        hit = (o == fill).all(0)
        ys, xs = torch.nonzero(hit, as_tuple=True)
        assert int(hit.sum()) == 64
        assert (int(ys.max() - ys.min()), int(xs.max() - xs.min())) == (7, 7)  # one 8x8 square
        assert torch.equal(o[:, ~hit], x[:, ~hit])  # the rest untouched
        corners.add((int(ys.min()), int(xs.min())))
    assert len(corners) > 20  # placed per image


def test_basic_augment_is_a_function_of_the_generator_seed(batch: torch.Tensor) -> None:
    cfg = dict(flip_p=0.5, translate=2, cutout=8)
    a = augment(batch, 7, **cfg)
    assert torch.equal(a, augment(batch, 7, **cfg))
    assert not torch.equal(a, augment(batch, 8, **cfg))
    assert not torch.equal(a, nchw(batch))


def test_other_kinds_leave_images_alone(batch: torch.Tensor) -> None:
    table = PixelTable.build(batch, 4, "zero", FILL)
    take = torch.arange(64)
    for kind in ("none", "albumentations"):
        cfg = AugmentConfig(kind=kind, translate=4, cutout=8)
        assert torch.equal(table.gather(table.index(take, cfg, gen(0))), nchw(batch))
    with pytest.raises(ValueError, match="exceeds the table's padding"):
        table.index(take, AugmentConfig(translate=5), gen(0))


def test_mean_fill_rounds_and_clamps() -> None:
    assert mean_fill([125.3, 122.96, 300.0]) == (125, 123, 255)


def test_albumentations_dropout_blanks_one_16px_square_with_the_mean() -> None:
    # Flip and Affine off, dropout always: the only change must be the hole.
    cfg = AugmentConfig(kind="albumentations", flip_p=0.0, affine_p=0.0, dropout_p=1.0, dropout_size=16)
    mean = (100.2, 150.0, 199.7)
    pipeline = albumentations_pipeline(cfg, mean)
    pipeline.set_random_seed(0)
    image = np.random.default_rng(0).integers(0, 90, (32, 32, 3), dtype=np.uint8)
    for _ in range(5):
        out = pipeline(image=image)["image"]
        hit = (out == np.array([100, 150, 200], dtype=np.uint8)).all(-1)
        ys, xs = np.nonzero(hit)
        assert hit.sum() == 256
        assert (np.ptp(ys), np.ptp(xs)) == (15, 15)
        assert np.array_equal(out[~hit], image[~hit])


def test_albumentations_pipeline_changes_images_and_follows_its_seed() -> None:
    cfg = AugmentConfig(kind="albumentations", affine_p=1.0)
    pipeline = albumentations_pipeline(cfg, (125.0, 123.0, 114.0))
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pipeline.set_random_seed(5)
    first = [pipeline(image=image)["image"] for _ in range(3)]
    pipeline.set_random_seed(5)
    again = [pipeline(image=image)["image"] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(a.shape == (32, 32, 3) and a.dtype == np.uint8 for a in first)
    assert not any(np.array_equal(a, image) for a in first)
