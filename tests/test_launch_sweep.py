"""The SLURM sweep recipe: one worker per task, with the task's ranks per trial (checked with a
stand-in interpreter that prints what it was given, since SLURM cannot run here), and it passes
shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "sweep.sbatch"


def test_sweep_recipe_starts_one_worker_with_the_tasks_ranks(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\necho \"PY $*\"\n"
                    "echo \"SHARE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-unset}\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "77",
           "SLURM_ARRAY_TASK_ID": "3", "SLURM_SUBMIT_DIR": str(ROOT)}
    out = subprocess.run(["bash", str(SCRIPT), "specs/sweep_airbench94.json", "--set",
                          "storage=postgresql://u@db:5432/s"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert ("PY -m ddpcifar.sweep run specs/sweep_airbench94.json --set ranks=4 --set "
            "storage=postgresql://u@db:5432/s") in out.stdout
    assert "SHARE=1" in out.stdout and "task 3 of job 77, 4 rank(s) per trial" in out.stderr
    env["RANKS"] = "2"
    out = subprocess.run(["bash", str(SCRIPT), "s.json"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert "PY -m ddpcifar.sweep run s.json --set ranks=2" in out.stdout
    usage = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: sbatch")


def test_sweep_recipe_passes_shellcheck():
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
