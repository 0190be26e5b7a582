"""benchmarks/repro_table.py: the reproduction results table and its evaluate check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "repro_table.py"


def write_run(runs: Path, model: str, *, best_epoch: int, epochs: int, evaluated_top1: float,
              best_tta: float | None, evaluated_tta: float | None) -> None:
    run = runs / f"{model}_repro"
    run.mkdir(parents=True)
    best = {"epoch": best_epoch, "loss": 0.4, "top1": 0.8791, "top5": 0.9945, "top1_tta": best_tta}
    final = {"epoch": epochs, "loss": 0.41, "top1": 0.8790, "top5": 0.9944, "top1_tta": 0.884}
    summary = {"parameters": 5_741_514, "epochs": float(epochs), "best": best, "final": final,
               "train_time_s": 4496.0, "images_per_s": 297.4}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "evaluate.json").write_text(json.dumps(
        {"top1": evaluated_top1, "top5": 0.9945, "top1_tta": evaluated_tta}))
    (run / "reproduce.json").write_text(json.dumps(
        {"command": f"torchrun ... specs/{model}_repro.json", "wall_s": 4505,
         "load_before": "0.93 0.47 0.19", "load_after": "2.07 2.10 2.05"}))


def table(runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(runs)], capture_output=True, text=True)


def test_tta_of_an_earlier_best_epoch_comes_from_its_evaluation(tmp_path):
    # The run computes TTA after its last epoch; the best checkpoint (epoch 24 of 25) has none in
    # the summary, so the row takes it from `evaluate` on that checkpoint.
    write_run(tmp_path, "vgg8bn", best_epoch=24, epochs=25, evaluated_top1=0.8791,
              best_tta=None, evaluated_tta=0.8836)
    write_run(tmp_path, "net5fc", best_epoch=25, epochs=25, evaluated_top1=0.8791,
              best_tta=0.8291, evaluated_tta=0.8290)
    result = table(tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert rows["vgg8bn"]["top1_tta"] == 0.8836
    assert rows["net5fc"]["top1_tta"] == 0.8291  # the run's own figure wins when it has one
    md = (tmp_path / "results.md").read_text()
    assert "| `vgg8bn` | 5,741,514 | 25.0 | 87.91% (24) | 88.36% | 99.45% | 75.1 min |" in md
    assert not list(tmp_path.glob("*.tmp"))


def test_an_evaluation_that_differs_from_its_summary_fails(tmp_path):
    write_run(tmp_path, "vgg8bn", best_epoch=24, epochs=25, evaluated_top1=0.8700,
              best_tta=None, evaluated_tta=0.88)
    result = table(tmp_path)
    assert result.returncode == 1
    assert "| NO |" in result.stdout


def test_a_missing_runs_directory_is_one_line_error(tmp_path):
    result = table(tmp_path / "absent")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such directory" in result.stderr
