"""Training through FFCV's Loader under torchrun, where distributed padding really happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_three_ranks_on_ffcv_count_each_test_image_once(tmp_path, prepared_data):
    # 200 test images over 3 ranks: FFCV pads to 201, one duplicate that must not be counted.
    runs = tmp_path / "runs"
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=3",
           "-m", "ddpcifar.train", str(ROOT / "specs" / "vgg8bn.json"),
           "--set", f"data.dir={prepared_data.data_dir}", "--set", "data.loader=ffcv",
           "--set", "data.num_workers=1", "--set", f"logging.runs_dir={runs}",
           "--set", "logging.run_name=ffcv3", "--set", "train.epochs=1",
           "--set", "train.global_batch_size=99", "--set", "eval.batch_size=99",
           "--set", "logging.progress=false"]
    # PYTHONFAULTHANDLER: a worker killed by SIGABRT/SIGSEGV prints every thread's Python stack.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    # Every rank's output (no rank filter), not only the end of torchrun's epilogue.
    assert proc.returncode == 0, f"===== stdout\n{proc.stdout}\n===== stderr\n{proc.stderr}"

    run = runs / "ffcv3"
    summary = json.loads((run / "summary.json").read_text())
    final = summary["final"]
    assert summary["world_size"] == 3
    assert final["count"] == 200 and sum(map(sum, final["confusion"])) == 200
    # Per-class totals are the fixture's 20 per class: no class got the duplicate.
    assert [sum(row) for row in final["confusion"]] == [20] * 10
    # 1000 train images, 33 per rank per step: 1000 // 3 // 33 = 10 full steps.
    assert summary["steps"] == 10

    # The same weights evaluated by one process on the in-memory backend agree exactly.
    out = subprocess.run([sys.executable, "-m", "ddpcifar.evaluate",
                          str(run / "checkpoints" / "last.pt"), "--data",
                          str(prepared_data.data_dir), "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    single = json.loads(out.stdout)
    assert single["confusion"] == final["confusion"]
    assert single["top1"] == final["top1"]
