"""One real `torchrun --nproc_per_node=2` run on gloo, then checks on everything it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
EPOCHS = 2


@pytest.fixture(scope="module")
def torchrun_run(prepared_data, tmp_path_factory):
    """Train era_s9 (the ERA-style net, with its albumentations pipeline) on 2 gloo ranks."""
    tmp = tmp_path_factory.mktemp("e2e")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "ddpcifar.train",
           str(ROOT / "specs" / "era_s9.json"),
           "--set", f"data.dir={prepared_data.data_dir}",
           "--set", "data.num_workers=1",
           "--set", f"logging.runs_dir={tmp / 'runs'}",
           "--set", "logging.run_name=e2e",
           "--set", f"train.epochs={EPOCHS}",
           "--set", "train.global_batch_size=100",
           "--set", "train.log_every=3",
           "--set", "eval.batch_size=50",
           "--set", "eval.max_samples=30"]
    # PYTHONFAULTHANDLER: a worker killed by SIGABRT/SIGSEGV prints every thread's Python stack.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:  # every rank's output (no rank filter), not only torchrun's epilogue
        pytest.fail(f"torchrun failed (exit status {proc.returncode})\n===== stdout\n"
                    f"{proc.stdout}\n===== stderr\n{proc.stderr}")
    return tmp / "runs" / "e2e", proc


@pytest.mark.slow
def test_run_directory_is_complete(torchrun_run):
    run, proc = torchrun_run
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["world_size"] == 2
    assert status["epoch"] == status["epochs"] == EPOCHS
    spec = json.loads((run / "spec.json").read_text())
    assert spec["train"]["global_batch_size"] == 100 and spec["logging"]["run_name"] == "e2e"
    for name in ("last.pt", "last.pt.sha256", "best.pt", "best.pt.sha256"):
        assert (run / "checkpoints" / name).is_file(), name
    assert "world size 2 on cpu (gloo)" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_metrics_log_is_well_formed(torchrun_run):
    run, _ = torchrun_run
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {line["kind"] for line in lines} == {"train", "eval"}
    for line in lines:
        assert set(line) == {"kind", "epoch", "step", "time", "values"}
    steps = [line["step"] for line in lines if line["kind"] == "train"]
    assert steps == sorted(steps) and steps[-1] == EPOCHS * (1000 // 100)
    evals = [line for line in lines if line["kind"] == "eval"]
    assert [e["epoch"] for e in evals] == list(range(1, EPOCHS + 1))
    last = evals[-1]["values"]
    assert last["count"] == 200, "each test image counted once, padding excluded"
    assert sum(map(sum, last["confusion"])) == 200
    assert len(last["per_class"]) == 10 and 0 <= last["top1"] <= last["top3"] <= last["top5"] <= 1
    train = [line["values"] for line in lines if line["kind"] == "train"]
    assert all(np.isfinite(v["loss"]) and v["lr"] > 0 and v["images_per_s"] > 0 for v in train)


@pytest.mark.slow
def test_samples_are_the_misclassified_test_images(torchrun_run, prepared_data):
    run, _ = torchrun_run
    with np.load(run / "samples" / f"epoch_{EPOCHS:04d}.npz", allow_pickle=False) as z:
        images, true, pred, conf, index = (z[k] for k in ("images", "true", "pred", "confidence", "index"))
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert 0 < len(index) <= 30 and np.all(np.diff(index) > 0)
    assert np.all(true != pred) and np.all((conf > 0) & (conf <= 1))
    np.testing.assert_array_equal(images, prepared_data.test.images[index])
    np.testing.assert_array_equal(true, prepared_data.test.labels[index])


@pytest.mark.slow
def test_summary_and_evaluate_agree(torchrun_run, prepared_data):
    run, _ = torchrun_run
    summary = json.loads((run / "summary.json").read_text())
    assert {"top1", "top3", "top5", "loss", "per_class", "confusion"} <= set(summary["final"])
    best = summary["best"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ddpcifar.evaluate", str(run / best["checkpoint"]),
                           "--data", str(prepared_data.data_dir), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert {"top1", "top3", "top5", "loss", "per_class", "confusion"} <= set(got)
    # One process re-evaluates what two ranks evaluated during training: same images, same
    # weights, so the same predictions (bf16 autocast may move a loss digit, not a count).
    assert got["confusion"] == best["confusion"]
    assert got["top1"] == best["top1"] and got["top5"] == best["top5"]
    assert got["loss"] == pytest.approx(best["loss"], rel=1e-3)


@pytest.mark.slow
def test_tensorboard_has_scalars_images_and_hparams(torchrun_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = torchrun_run
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "eval/top1", "eval/loss", "eval/top5"} <= set(tags["scalars"])
    assert len(acc.Scalars("eval/top1")) == EPOCHS
    assert "eval/misclassified" in tags["images"]
    hp = [p for p in (run / "tb").rglob("events.out.tfevents.*")]
    blobs = b"".join(p.read_bytes() for p in hp)
    assert b"hparams" in blobs and b"global_batch_size" in blobs
