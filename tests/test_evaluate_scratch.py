"""`python -m ddpcifar.evaluate` on the NumPy engine's `.npz` checkpoints.

One tiny NumPy run (the network of test_scratch_training.py, 2 epochs on the `prepared_data`
fixture, a few seconds) is shared by the module: its `scratch_best.npz` must reproduce the
`best` entry of its summary.json, and options only the torch engine has are refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_scratch_training import scratch_spec

from ddpcifar.engine.numpy_runner import run_scratch_spec
from ddpcifar.scratch.network import Sequential

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scratch_run(prepared_data, tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, summary) of a finished 2-epoch NumPy run.

    eval.batch_size=64 leaves a partial last batch of the 200 test images and differs from
    evaluate's default of 1000: the checkpoint's saved eval.batch_size must be the one used.
    """
    spec = scratch_spec(tmp_path_factory.mktemp("scratch_eval"), ["eval.batch_size=64"],
                        data_dir=prepared_data.data_dir)
    return spec.run_dir, run_scratch_spec(spec)


def evaluate_main(args: list) -> int:
    from ddpcifar.evaluate import main

    return main([str(a) for a in args])


def test_scratch_best_reproduces_the_summary(scratch_run, prepared_data):
    run, summary = scratch_run
    best = summary["best"]
    assert best["checkpoint"] == "checkpoints/scratch_best.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ddpcifar.evaluate", str(run / best["checkpoint"]),
                           "--data", str(prepared_data.data_dir), "--json"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert json.loads((run / "summary.json").read_text())["best"] == best
    # Same weights, normalisation, dtype and batches as the trainer's test evaluation.
    for key in ("top1", "top3", "top5", "per_class", "confusion", "count"):
        assert got[key] == best[key], key
    assert got["loss"] == pytest.approx(best["loss"], abs=1e-6)
    assert got["epoch"] == best["epoch"] and got["model"] == "scratch_cnn"
    assert got["classes"] == list(json.loads((prepared_data.data_dir / "meta.json")
                                             .read_text())["classes"])
    assert "top1_tta" not in got


def test_refuses_test_time_augmentation(scratch_run, prepared_data, capsys):
    run, _ = scratch_run
    path = run / "checkpoints" / "scratch_best.npz"
    rc = evaluate_main([path, "--data", prepared_data.data_dir, "--tta", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"error: --tta 1 does not apply to the NumPy engine checkpoint {path}: "
                   "it has no test-time augmentation (use --tta 0)\n")


def test_corrupt_npz_is_one_line(scratch_run, prepared_data, capsys, tmp_path):
    run, _ = scratch_run
    path = tmp_path / "broken.npz"
    path.write_bytes((run / "checkpoints" / "scratch_best.npz").read_bytes()[:300])
    rc = evaluate_main([path, "--data", prepared_data.data_dir])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot load checkpoint {path}: ")


def test_npz_without_meta_still_evaluates(scratch_run, prepared_data, capsys, tmp_path):
    """A file written before the metadata existed: the data's normalisation, batch size 1000."""
    run, summary = scratch_run
    path = tmp_path / "old.npz"
    Sequential.load(run / "checkpoints" / "scratch_final.npz").save(path)
    assert evaluate_main([path, "--data", prepared_data.data_dir, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["epoch"] is None
    assert got["confusion"] == summary["final"]["confusion"]
    assert got["loss"] == pytest.approx(summary["final"]["loss"], abs=1e-6)
