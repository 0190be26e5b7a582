"""The NumPy engine trains on NumPy alone: no torch, pydantic, FFCV or numba in the process.

Checked in a fresh interpreter (this test process has torch loaded already), through
`train_scratch`, the entry point `python -m ddpcifar.train` reaches via numpy_runner. The runner
converts the validated spec into `ScratchSettings`; here the settings are built directly, and
the schedule section is a plain namespace with the fields ddpcifar.schedule.lr_factor reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, types
from pathlib import Path

import numpy as np

from ddpcifar.runs.rundir import RunDir
from ddpcifar.scratch import Augment, ScratchSettings, Splits, train_scratch

rng = np.random.default_rng(0)
x = rng.integers(0, 256, (48, 32, 32, 3)).astype(np.uint8)
y = rng.integers(0, 10, 48)
schedule = types.SimpleNamespace(name="cosine", warmup_epochs=0.5, start_factor=0.1,
                                 peak_epoch=0.3, final_factor=0.0, step_epochs=10, gamma=0.1)
settings = ScratchSettings(
    epochs=2, batch_size=16, seed=1, log_every=1, label_smoothing=0.1, grad_clip=1.0, lr=0.05,
    momentum=0.9, nesterov=True, weight_decay=5e-4, schedule=schedule,
    augment=Augment(flip_p=0.5, translate=2, translate_pad="reflect", cutout=8),
    eval_batch_size=32, eval_every=1, max_samples=4, save_best=True, val_size=0, val_seed=0,
    architecture=[{"type": "conv", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
                  {"type": "relu"}, {"type": "maxpool", "size": 4}, {"type": "flatten"},
                  {"type": "linear", "out": 10}],
    dtype="float32", blas_threads=None)
splits = Splits(x, y, x[:20], y[:20], (120.0,) * 3, (60.0,) * 3, num_classes=10)
run = Path(sys.argv[1])
summary = train_scratch(settings, splits, RunDir(run, name="n", model="scratch_cnn",
                                                 engine="numpy", epochs=2, world_size=1,
                                                 classes=[str(i) for i in range(10)]),
                        progress=False)
loaded = sorted(m for m in ("torch", "pydantic", "ffcv", "numba") if m in sys.modules)
print(json.dumps({"loaded": loaded, "final_epoch": summary["final"]["epoch"]}))
"""


def test_training_runs_on_numpy_alone(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "run")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "final_epoch": 2}
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "train"] == [1, 2, 3, 4, 5, 6]  # 48 // 16 = 3 per epoch
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"
