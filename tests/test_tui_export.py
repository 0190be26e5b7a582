"""`python -m tui export` and the command line: PNG sizes, non-blank images, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tui_fixtures import make_fixture_runs
from tui.__main__ import main
from tui.export import FIGURES

REPO = Path(__file__).resolve().parents[1]


def test_export_writes_every_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = make_fixture_runs(tmp_path / "runs")
    out = tmp_path / "png"
    assert main(["export", str(runs["resnet_long"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == sorted(f"{n}.png" for n in FIGURES)
    for name, (width, height) in FIGURES.items():
        with Image.open(out / f"{name}.png") as img:
            assert img.size == (width, height), name
            pixels = np.asarray(img.convert("L"), dtype=np.float64)
        assert pixels.std() > 10, f"{name}.png looks blank"


def test_export_partial_run_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = make_fixture_runs(tmp_path / "runs")
    out = tmp_path / "png"
    # a failed run without samples: curves and evaluation only, with a warning
    assert main(["export", str(runs["broken"]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "no samples yet" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "confusion.png",
                                                    "loss.png", "per_class.png"]
    assert main(["export", str(tmp_path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: not a run directory")
    assert main(["export", str(runs["era_live"]), "--out", str(out), "--epoch", "99"]) == 2
    assert "no samples archive for epoch 99" in capsys.readouterr().err


def test_cli_help_and_missing_runs_dir(tmp_path: Path) -> None:
    help_ = subprocess.run([sys.executable, "-m", "tui", "--help"], cwd=REPO,
                           capture_output=True, text=True)
    assert help_.returncode == 0
    assert "--runs DIR" in help_.stdout and "export" in help_.stdout
    bad = subprocess.run([sys.executable, "-m", "tui", "--runs", str(tmp_path / "nope")],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: runs directory not found: {tmp_path / 'nope'}"
