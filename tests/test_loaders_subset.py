"""`data.max_samples` takes an evenly spaced subset, and indices still name split positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpcifar.data.config import AugmentConfig, DataConfig
from ddpcifar.data.loaders import build_loader
from ddpcifar.data.orders import subset_positions, to_split_index


def test_subset_positions_are_evenly_spaced():
    assert subset_positions(100, None) is None and subset_positions(100, 100) is None
    pos = subset_positions(100, 10)
    assert pos.tolist() == list(range(0, 100, 10))
    # A class-ordered split (10 classes x 10) keeps one sample of every class.
    assert sorted(set((pos // 10).tolist())) == list(range(10))
    assert to_split_index(np.array([0, 3, -1]), pos).tolist() == [0, 30, -1]


@pytest.mark.parametrize("backend", ["memory", "ffcv"])
def test_capped_eval_maps_back_to_the_split(prepared_data, backend):
    data = DataConfig(dir=prepared_data.data_dir, loader=backend, num_workers=1, max_samples=50)
    loader = build_loader(data, AugmentConfig(kind="none"), split="test", batch_size=16,
                          train=False, rank=0, world_size=1, seed=0, device=torch.device("cpu"),
                          mean=(0, 0, 0), std=(1, 1, 1))
    seen_index, seen_labels, seen_pixels = [], [], []
    for batch in loader:
        seen_index.append(batch.index)
        seen_labels.append(batch.labels)
        seen_pixels.append(batch.images)
    index = torch.cat(seen_index).numpy()
    assert index.tolist() == subset_positions(200, 50).tolist()
    np.testing.assert_array_equal(torch.cat(seen_labels).numpy(), prepared_data.test.labels[index])
    # mean 0 / std 1: the "normalised" images are the raw pixels, NCHW.
    pixels = torch.cat(seen_pixels).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(pixels, prepared_data.test.images[index].astype(np.float32))
