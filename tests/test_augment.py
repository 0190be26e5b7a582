"""Batched tensor augmentations and the albumentations recipe, on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpcifar.data.augment import albumentations_pipeline, basic_augment, cutout, flip, mean_fill, translate
from ddpcifar.data.config import AugmentConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    """64 random uint8 images in [0, 200) as NCHW (channels_last memory like the loaders)."""
    hwc = torch.randint(0, 200, (64, 32, 32, 3), generator=gen(0), dtype=torch.uint8)
    return hwc.permute(0, 3, 1, 2)


def test_flip_mirrors_about_half_of_the_images(batch: torch.Tensor) -> None:
    out = flip(batch, 0.5, gen(1))
    flipped = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(out, batch)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, batch)])
    assert bool((flipped ^ kept).all())  # every image is either mirrored or untouched
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(flip(batch, 1.0, gen(1)), batch.flip(-1))
    assert torch.equal(flip(batch, 0.0, gen(1)), batch)


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
    out = translate(batch, pad, mode, gen(2))
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    # Reference: torch's own padding (reflect needs float), then every possible crop.
    padded = F.pad(batch.float(), (pad,) * 4, mode="constant" if mode == "zero" else "reflect").to(torch.uint8)
    shifts = [find_shift(o, p, pad) for o, p in zip(out, padded)]
    assert all(s is not None for s in shifts), "an output is not a crop of the padded image"
    assert len(set(shifts)) > 20  # shifts are drawn per image, not per batch
    assert any(s != (0, 0) for s in shifts)


def test_cutout_fills_exactly_one_square(batch: torch.Tensor) -> None:
    fill = torch.tensor([250, 251, 252], dtype=torch.uint8)  # never present in `batch`
    out = cutout(batch, 8, fill, gen(3))
    for o, x in zip(out, batch):
        hit = (o == fill.view(3, 1, 1)).all(0)
        ys, xs = torch.nonzero(hit, as_tuple=True)
        assert int(hit.sum()) == 64
        assert (int(ys.max() - ys.min()), int(xs.max() - xs.min())) == (7, 7)  # one 8x8 square
        assert torch.equal(o[:, ~hit], x[:, ~hit])  # the rest untouched
    corners = {(int(torch.nonzero((o == fill.view(3, 1, 1)).all(0))[0, 0])) for o in out}
    assert len(corners) > 5  # placed per image


def test_basic_augment_is_a_function_of_the_generator_seed(batch: torch.Tensor) -> None:
    cfg = AugmentConfig(kind="basic", translate=2, cutout=8)
    fill = torch.tensor(mean_fill([125.3, 123.0, 113.9]), dtype=torch.uint8)
    a = basic_augment(batch, cfg, fill, gen(7))
    assert torch.equal(a, basic_augment(batch, cfg, fill, gen(7)))
    assert not torch.equal(a, basic_augment(batch, cfg, fill, gen(8)))
    assert not torch.equal(a, batch)


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
