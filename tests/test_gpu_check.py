"""The GPU check's dry run on CPU (`--device cpu --tiny`), so the script cannot rot unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out), "--device", "cpu", "--tiny"],
                          cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, text=True,
                          capture_output=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    log = (out / "gpu_check.log").read_text()
    assert "wrote" in log and "gpu_check.json" in log
    assert result["ok"] and result["failures"] == [] and result["tiny"]
    env = result["environment"]
    assert env["device"] == "cpu" and env["torch"]
    assert result["pytest_gpu"]["ok"]
    assert result["data"]["ok"] and result["data"]["synthetic_train"] == 80
    assert "train_images.npy" in result["data"]["files"]
    runs = {r["name"]: r for r in result["train_runs"]}
    for name in ("airbench-memory-bf16-cl", "airbench-memory-off-cl", "airbench-memory-bf16-nocl"):
        assert runs[name]["ok"] and runs[name]["images_per_s"] > 0, runs[name]
        assert 0 <= runs[name]["final_top1"] <= 1
    if env["ffcv"]:
        assert runs["airbench-ffcv-bf16-cl"]["ok"]
    else:
        assert "FFCV unavailable: skipped FFCV loader checks" in log
    assert result["evaluate"]["matches_training_best"] and result["evaluate"]["count"] == 16
    for name in ("era_s9", "resnet9", "airbench"):
        model = result["models"][name]
        assert model["images_per_s"] > 0 and model["step_ms"] > 0
        assert set(model["split_step_ms"]) == {"loader", "forward_backward", "optimizer", "logging"}
        assert all(v >= 0 for v in model["split_step_ms"].values())
    assert result["loaders"]["memory"]["images_per_s"] > 0
    if "airbench94" in result["models"]:
        projection = result["airbench94_projection"]
        assert projection["epochs"] == 9.9 and projection["projected_s_step_loop"] > 0
    assert 0 < result["elapsed_s"] < 200
