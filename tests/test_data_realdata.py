"""Convert the real CIFAR-10 (JPEG copy in ../shared/data/cifar10-jpeg) and read it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpcifar.data.beton import read_split
from ddpcifar.data.meta import CIFAR10_CLASSES, load_meta
from ddpcifar.data.prepare import main

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpeg"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not REAL.is_dir(), reason=f"real CIFAR-10 copy not present at {REAL}"),
]


def test_real_cifar10_jpeg_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "cifar10"
    assert main(["--source", str(REAL), "--out", str(out), "--quiet"]) == 0
    meta = load_meta(out, verify_sha256=True)
    assert meta.classes == CIFAR10_CLASSES
    assert (meta.counts.train, meta.counts.test) == (50_000, 10_000)
    assert meta.class_counts.train == (5_000,) * 10 and meta.class_counts.test == (1_000,) * 10
    assert meta.source.kind == "image-folder"
    for split, per_class in (("train", 5_000), ("test", 1_000)):
        images, labels = read_split(out, split)
        assert images.shape == (10 * per_class, 32, 32, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(labels, np.repeat(np.arange(10), per_class))
        # Spot checks: first and last file of a few classes, decoded independently with PIL.
        for label in (0, 3, 9):
            files = sorted((REAL / split / CIFAR10_CLASSES[label]).iterdir())
            for position in (0, len(files) - 1):
                expected = np.asarray(Image.open(files[position]).convert("RGB"))
                np.testing.assert_array_equal(images[label * per_class + position], expected)
    # Published CIFAR-10 train statistics are about (125.3, 123.0, 113.9) / (63.0, 62.1, 66.7);
    # the JPEG copy must be close to them.
    np.testing.assert_allclose(meta.mean, (125.3, 123.0, 113.9), atol=1.5)
    np.testing.assert_allclose(meta.std, (63.0, 62.1, 66.7), atol=2.0)
