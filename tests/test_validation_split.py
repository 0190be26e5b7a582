"""The validation split (data.val_size): stratified, drawn from data.val_seed alone, the same on
every rank, in both loader backends and across a resume, recorded in validation.json, never
trained on, evaluated beside the test split, and what best.pt follows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from runs_fixtures import ENV, tiny_spec

from ddpcifar.data.config import AugmentConfig, DataConfig
from ddpcifar.data.loaders import build_loader
from ddpcifar.data.orders import validation_positions

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_validation_positions_are_stratified_seeded_and_exact():
    labels = np.repeat(np.arange(10), [120, 80, 100, 100, 100, 100, 100, 100, 100, 100])
    held = validation_positions(labels, 100, seed=3)
    assert len(held) == 100 and len(set(held.tolist())) == 100
    assert np.bincount(labels[held]).tolist() == [12, 8] + [10] * 8  # each class its share
    assert held.tolist() == validation_positions(labels, 100, seed=3).tolist()
    assert held.tolist() != validation_positions(labels, 100, seed=4).tolist()
    assert len(validation_positions(labels, 0.05, seed=0)) == 50  # a fraction of the split


def _positions(loader) -> np.ndarray:
    return np.concatenate([b.index.numpy() for b in loader])


@pytest.mark.parametrize("backend", ["memory", "ffcv"])
def test_every_rank_holds_out_the_same_images_and_never_trains_on_them(prepared_data, backend):
    data = DataConfig(dir=prepared_data.data_dir, loader=backend, num_workers=1, val_size=100,
                      val_seed=7)
    def make(split, rank, train, world=2):
        return build_loader(data, AugmentConfig(kind="none"), split=split, batch_size=50,
                            train=train, rank=rank, world_size=world, seed=0,
                            device=torch.device("cpu"), mean=(0, 0, 0), std=(1, 1, 1))
    expected = validation_positions(prepared_data.train.labels, 100, seed=7)
    # Each rank evaluates its shard of the one held-out set; together exactly that set. (FFCV's
    # distributed evaluation needs a process group: one rank there.)
    ranks = (0, 1) if backend == "memory" else (0,)
    shards = [_positions(make("val", rank, False, len(ranks))) for rank in ranks]
    assert sorted(np.concatenate(shards).tolist()) == expected.tolist()
    trained = np.concatenate([_positions(make("train", rank, True)) for rank in (0, 1)])
    assert len(trained) == 900 and not set(trained.tolist()) & set(expected.tolist())


@pytest.mark.slow
def test_a_run_records_its_split_evaluates_it_and_keeps_it_across_a_resume(tmp_path,
                                                                           prepared_data):
    spec = tiny_spec(tmp_path / "v.json", prepared_data.data_dir, name="v", epochs=2,
                     data={"val_size": 100, "val_seed": 7})
    for extra in ([], ["--resume"]):
        proc = subprocess.run([*TORCHRUN, "-m", "ddpcifar.train", str(spec), *extra],
                              cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run = tmp_path / "runs" / "v"
        record = json.loads((run / "validation.json").read_text())
        assert record["positions"] == validation_positions(prepared_data.train.labels, 100,
                                                           seed=7).tolist()
        assert record["size"] == 100 and record["per_class"] == [10] * 10
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert [e["values"]["val_count"] for e in evals] == [100, 100, 100]  # 2 epochs + resume
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["selected_by"] == "val_loss" and summary["val"]["count"] == 100
    best_epoch = min(evals[:2], key=lambda e: e["values"]["val_loss"])["epoch"]
    assert summary["best"]["epoch"] == best_epoch
