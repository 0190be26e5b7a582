"""A resume that replays steps leaves each step once in metrics.jsonl and in TensorBoard."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ddpcifar.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def _scalar_steps(tb_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [event.step for event in acc.Scalars(tag)]


@pytest.mark.slow
def test_replayed_steps_are_logged_once(tmp_path, prepared_data):
    args = [str(ROOT / "specs" / "net5fc.json"),
            "--set", f"data.dir={prepared_data.data_dir}", "--set", "data.num_workers=0",
            "--set", f"logging.runs_dir={tmp_path}", "--set", "logging.run_name=r",
            "--set", "logging.progress=false", "--set", "train.epochs=2",
            "--set", "train.global_batch_size=100", "--set", "train.log_every=2",
            "--set", "eval.batch_size=100", "--set", "augment.kind=none"]
    assert train_main(args) == 0
    run = tmp_path / "r"
    before = (run / "metrics.jsonl").read_text().splitlines()
    train_steps = _scalar_steps(run / "tb", "train/loss")
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 20

    # Roll back to the epoch-1 checkpoint, as if the epoch-2 one had been lost: the resume
    # replays epoch 2, whose lines and events the first attempt had already written.
    for suffix in ("", ".sha256"):
        os.replace(run / "checkpoints" / f"prev.pt{suffix}", run / "checkpoints" / f"last.pt{suffix}")
    (run / "checkpoints" / ".last.pt.x.tmp").write_bytes(b"left by a kill mid-write")
    shutil.copy(run / "status.json", tmp_path / "status.before")
    assert train_main([*args, "--resume"]) == 0

    after = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in after]
    keys = [(r["kind"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)), "no duplicated metrics lines"
    # Same lines as the uninterrupted attempt, timing fields aside (CPU, deterministic).
    strip = lambda r: {**r, "time": 0, "values": {k: v for k, v in r["values"].items()  # noqa: E731
                                                 if k != "images_per_s"}}
    assert [strip(r) for r in rows] == [strip(json.loads(line)) for line in before]
    steps = _scalar_steps(run / "tb", "train/loss")
    assert steps == sorted(set(steps)) and steps[-1] == 20, steps
    assert not list((run / "checkpoints").glob(".*.tmp")), "stale temporary files removed"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_numpy_engine_refuses_resume(tmp_path, prepared_data, capsys):
    args = [str(ROOT / "specs" / "scratch_cnn.json"), "--set", f"data.dir={prepared_data.data_dir}",
            "--set", f"logging.runs_dir={tmp_path}", "--resume"]
    assert train_main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --resume: the NumPy engine (model 'scratch_cnn') does not resume; start a new "
        "run with --set logging.run_name=NAME")
    assert not (tmp_path / "scratch_cnn").exists()
