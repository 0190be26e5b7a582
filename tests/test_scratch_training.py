"""The NumPy engine's trainer end to end: run directory contract, checkpoint, data split.

Settings always come from a validated spec (numpy_runner.scratch_settings), as in the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddpcifar.data.meta import CIFAR10_CLASSES
from ddpcifar.engine.numpy_runner import run_scratch_spec, scratch_settings
from ddpcifar.runs.rundir import RunDir
from ddpcifar.errors import UserError
from ddpcifar.scratch.augment import Normalizer
from ddpcifar.scratch.network import Sequential
from ddpcifar.scratch.settings import ScratchSettings
from ddpcifar.scratch.trainer import Splits, split_train_val, train_scratch
from ddpcifar.spec import RunSpec, load_spec

# Small enough to train in a few seconds on 32x32 inputs.
TINY = [
    {"type": "conv", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool", "size": 4},
    {"type": "flatten"},
    {"type": "linear", "out": 10},
]
EVAL_KEYS = {"loss", "top1", "top3", "top5", "per_class", "confusion", "count"}


def scratch_spec(tmp_path: Path, overrides: list[str] = (), data_dir: Path | str = "data/cifar10",
                 ) -> RunSpec:
    """A validated scratch_cnn spec (the tiny network, no progress bar) plus `overrides`."""
    data = {
        "data": {"dir": str(data_dir)},
        "model": {"name": "scratch_cnn"},
        "optimizer": {"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "augment": {"kind": "basic", "translate": 2},
        "train": {"epochs": 2, "global_batch_size": 50},
        "eval": {"batch_size": 500},
        "scratch": {"architecture": TINY},
        "logging": {"runs_dir": str(tmp_path / "runs"), "run_name": "run", "progress": False,
                    "tensorboard": False},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return load_spec(path, overrides)


def settings_of(tmp_path: Path, overrides: list[str] = ()) -> ScratchSettings:
    return scratch_settings(scratch_spec(tmp_path, overrides))


def make_rundir(path: Path, epochs: int) -> RunDir:
    return RunDir(path, name=path.name, model="scratch_cnn", engine="numpy", epochs=epochs,
                  world_size=1, classes=CIFAR10_CLASSES)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_scratch_writes_the_documented_run_directory(prepared_data, tmp_path):
    """Through the runner the CLI uses: reads the betons, converts the spec, trains."""
    data_dir, _, test = prepared_data
    spec = scratch_spec(tmp_path, ["data.val_size=0.2", "train.log_every=7",
                                   "eval.max_samples=5", "logging.tensorboard=true"],
                        data_dir=data_dir)
    run = spec.run_dir
    summary = run_scratch_spec(spec)
    assert json.loads((run / "spec.json").read_text()) == spec.resolved()
    assert list((run / "tb").glob("events.out.tfevents.*")), "logging.tensorboard is honoured"

    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["error"] is None
    assert status["epoch"] == 2 and status["engine"] == "numpy"
    assert 0 <= status["last_top1"] <= status["best_top1"] <= 1
    assert status["images_per_s"] > 0

    lines = read_metrics(run)
    train = [m for m in lines if m["kind"] == "train"]
    evals = [m for m in lines if m["kind"] == "eval"]
    steps_per_epoch = 800 // 50  # 1,000 train images minus the 20 % validation part
    # every 7th step, plus the end of each epoch
    assert [m["step"] for m in train] == [7, 14, 16, 21, 28, 32]
    for m in train:
        assert set(m["values"]) == {"loss", "top1", "lr", "images_per_s"}
        assert 0 < m["epoch"] <= 2 and m["time"] >= 0
    assert [m["epoch"] for m in evals] == [1, 2]
    assert [m["step"] for m in evals] == [steps_per_epoch, 2 * steps_per_epoch]
    for m in evals:
        v = m["values"]
        assert set(v) == EVAL_KEYS | {"train_loss", "train_top1", "val_loss", "val_top1",
                                      "val_top3", "val_top5", "val_count"}
        assert v["val_count"] == 200  # 20 % of the 1,000 train images
        assert v["count"] == len(test.labels) == 200
        assert len(v["per_class"]) == 10
        assert np.asarray(v["confusion"]).sum() == 200
        assert np.trace(np.asarray(v["confusion"])) == round(v["top1"] * 200)
        assert v["top1"] <= v["top3"] <= v["top5"] <= 1
        assert 0 <= v["val_top1"] <= 1

    for epoch in (1, 2):
        with np.load(run / "samples" / f"epoch_{epoch:04d}.npz", allow_pickle=False) as s:
            assert s["images"].dtype == np.uint8 and s["images"].shape[1:] == (32, 32, 3)
            assert 0 < len(s["images"]) <= 5
            assert s["true"].dtype == np.int64 and s["pred"].dtype == np.int64
            assert s["confidence"].dtype == np.float32
            assert (s["true"] != s["pred"]).all()
            assert (np.diff(s["index"]) > 0).all()  # test-set order
            np.testing.assert_array_equal(s["images"], test.images[s["index"]])
            np.testing.assert_array_equal(s["true"], test.labels[s["index"]])

    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["final"] == summary["final"]
    assert set(summary["final"]) == EVAL_KEYS | {"epoch"} and summary["final"]["epoch"] == 2
    assert set(summary["best"]) == EVAL_KEYS | {"epoch", "checkpoint", "selected_by", "val_loss",
                                                "val_top1", "val_top3", "val_top5", "val_count"}
    assert summary["best"]["selected_by"] == "val_loss"  # a validation split chooses best
    assert summary["parameters"] == 4 * 27 + 4 + 64 * 10 + 10
    assert summary["wall_time_s"] > 0 and summary["images_per_s"] > 0
    assert (run / summary["best"]["checkpoint"]).is_file()

    # The final checkpoint rebuilds the network and reproduces the final test accuracy.
    net = Sequential.load(run / "checkpoints" / "scratch_final.npz")
    norm = Normalizer(*mean_std(data_dir), np.float32)
    pred = net.forward(norm(test.images), train=False).argmax(axis=1)
    assert (pred == test.labels).mean() == pytest.approx(summary["final"]["top1"])


def mean_std(data_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    meta = json.loads((data_dir / "meta.json").read_text())
    return tuple(meta["mean"]), tuple(meta["std"])


def learnable_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class is written as a bright 8x8 patch at a class-specific spot."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 100, (n, 32, 32, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 5)
        images[i, 4 + 16 * r:12 + 16 * r, 2 + 6 * c:8 + 6 * c, :] = 250
    return images, labels


def test_train_scratch_learns_a_learnable_task(tmp_path):
    train_x, train_y = learnable_data(600, seed=0)
    test_x, test_y = learnable_data(200, seed=1)
    settings = settings_of(tmp_path, ["train.epochs=3", "train.global_batch_size=32",
                                      "optimizer.lr=0.02", "augment.kind=none",
                                      "train.log_every=100", "data.val_size=0.1"])
    splits = Splits(train_x, train_y, test_x, test_y, (60.0,) * 3, (60.0,) * 3, num_classes=10)
    summary = train_scratch(settings, splits, make_rundir(tmp_path / "run", 3), progress=False)
    assert summary["final"]["top1"] > 0.9  # chance is 0.1
    assert summary["val"]["top1"] > 0.9


def test_failed_run_is_marked_failed(tmp_path):
    train_x, train_y = learnable_data(64, seed=0)
    seven_classes = TINY[:-1] + [{"type": "linear", "out": 7}]
    settings = settings_of(tmp_path, ["train.epochs=1", "train.global_batch_size=32",
                                      "data.val_size=0", "scratch.architecture="
                                      + json.dumps(seven_classes)])
    splits = Splits(train_x, train_y, train_x, train_y, (60.0,) * 3, (60.0,) * 3, num_classes=10)
    run = tmp_path / "run"
    with pytest.raises(UserError, match="7 outputs"):
        train_scratch(settings, splits, make_rundir(run, 1), progress=False)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "7 outputs" in status["error"]


def test_validation_split_is_seeded_stratified_and_disjoint():
    x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(3, axis=3)
    y = np.arange(100) % 4  # 25 per class
    a = split_train_val(x, y, 0.2, seed=5)
    b = split_train_val(x, y, 0.2, seed=5)
    c = split_train_val(x, y, 0.2, seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert len(a[3]) == 20 and len(a[1]) == 80
    assert np.bincount(a[3]).tolist() == [5, 5, 5, 5]  # each class gives its share
    train_ids, val_ids = set(a[0][:, 0, 0, 0]), set(a[2][:, 0, 0, 0])
    assert train_ids.isdisjoint(val_ids) and train_ids | val_ids == set(range(100))
    assert val_ids != set(c[2][:, 0, 0, 0])


def test_missing_data_dir_is_a_user_error_and_leaves_no_run(tmp_path):
    spec = scratch_spec(tmp_path, data_dir=tmp_path / "nope")
    with pytest.raises(UserError, match="data directory not found.*nope"):
        run_scratch_spec(spec)
    assert not spec.run_dir.exists()


def test_data_max_samples_takes_the_torch_engines_subset(prepared_data, tmp_path):
    """data.max_samples keeps evenly spaced positions of each split (ddpcifar.data.orders),
    before the validation split; samples record positions in the test file."""
    from ddpcifar.data.meta import load_meta
    from ddpcifar.engine.numpy_runner import read_splits

    data_dir, train, test = prepared_data
    spec = scratch_spec(tmp_path, ["data.max_samples=100"], data_dir=data_dir)
    splits = read_splits(spec, load_meta(data_dir))
    np.testing.assert_array_equal(splits.train_y, train.labels[::10])  # 1,000 -> every 10th
    np.testing.assert_array_equal(splits.test_x, test.images[::2])  # 200 -> every 2nd
    np.testing.assert_array_equal(splits.test_index, np.arange(0, 200, 2))


def test_scratch_package_does_not_import_torch():
    """NumPy only: importing every scratch module must not pull torch in (checked in a fresh
    interpreter, since this test process has torch loaded already)."""
    import subprocess
    import sys

    modules = sorted(p.stem for p in (Path(__file__).parents[1] / "ddpcifar" / "scratch")
                     .glob("*.py") if p.stem != "__init__")
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module('ddpcifar.scratch.' + m)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], check=True)
    assert len(modules) >= 7
    assert out.stdout.strip() == "False"
