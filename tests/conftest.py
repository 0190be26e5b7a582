"""Shared pytest fixtures: small CIFAR-10 sources built on the fly, and one prepared data dir."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers importable by name

from cifar_fixtures import Expected, make_cifar_tarball, make_image_folder  # noqa: E402

from ddpcifar.data.prepare import main as data_prep_main  # noqa: E402


class PreparedData(NamedTuple):
    """A converted data directory and the arrays it must contain (unpacks as a 3-tuple)."""

    data_dir: Path
    train: Expected  # .images uint8 (1000, 32, 32, 3) HWC RGB, .labels int64 (1000,)
    test: Expected  # .images uint8 (200, 32, 32, 3), .labels int64 (200,)


@pytest.fixture
def cifar_tarball(tmp_path: Path) -> tuple[Path, Expected, Expected]:
    """A small cifar-10-python.tar.gz in the official format: (path, train, test)."""
    return make_cifar_tarball(tmp_path, n_train_per_batch=20, n_test=20, seed=1)


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, Expected, Expected]:
    """A small train/<class>/*.png, test/<class>/*.png tree: (root, train, test)."""
    return make_image_folder(tmp_path, n_train_per_class=4, n_test_per_class=2, seed=2)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """train.beton/test.beton/meta.json converted once per session by the real data_prep.

    1,000 train images (100 per class) and 200 test images (20 per class), random pixels,
    converted from an official-format tarball with --allow-unofficial. Treat it as read-only.
    """
    work = tmp_path_factory.mktemp("prepared_data")
    tarball, train, test = make_cifar_tarball(work, n_train_per_batch=200, n_test=200, seed=0)
    data_dir = work / "cifar10"
    status = data_prep_main(["--source", str(tarball), "--out", str(data_dir),
                             "--allow-unofficial", "--quiet"])
    assert status == 0, "data_prep failed on the session fixture"
    for expected in (train, test):  # shared by many tests: make accidental mutation fail loudly
        expected.images.flags.writeable = False
        expected.labels.flags.writeable = False
    assert np.bincount(train.labels).tolist() == [100] * 10
    return PreparedData(data_dir, train, test)
