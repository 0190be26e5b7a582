"""The TUI in a real terminal (tmux) following a live 2-process torchrun training run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True).stdout


def _eval_top1s(run: Path) -> list[str]:
    """Every test top-1 logged so far, formatted as the run list shows it."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if row["kind"] == "eval":
            out.append(f"{row['values']['top1'] * 100:.2f}%")
    return out


def test_tui_follows_a_live_torchrun_run(tmp_path, prepared_data):
    runs = tmp_path / "runs"
    run = runs / "live_ddp"
    train = subprocess.Popen(
        [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2",
         "-m", "ddpcifar.train", str(ROOT / "specs" / "airbench.json"),
         "--set", f"data.dir={prepared_data.data_dir}", "--set", f"logging.runs_dir={runs}",
         "--set", "logging.run_name=live_ddp", "--set", f"train.epochs={EPOCHS}",
         "--set", "train.global_batch_size=100", "--set", "eval.batch_size=100",
         "--set", "logging.progress=false"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    session = f"live-{os.getpid()}"
    runs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "40",
                    f"cd {ROOT} && {sys.executable} -m tui --runs {runs} --poll 0.3"], check=True)
    try:
        seen_epochs: list[int] = []
        matched_accuracy = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            screen = _screen(session)
            for epoch in range(1, EPOCHS + 1):
                if f"{epoch}/{EPOCHS}" in screen and "live_ddp" in screen and epoch not in seen_epochs:
                    seen_epochs.append(epoch)
            hits = [a for a in _eval_top1s(run) if a in screen]
            if hits and "live_ddp" in screen:
                matched_accuracy = hits[-1]
            if train.poll() is not None and EPOCHS in seen_epochs:
                break
            time.sleep(0.3)
        _, err = train.communicate(timeout=120)
        assert train.returncode == 0, err  # every rank's stderr, torchrun's summary last
        assert matched_accuracy, f"no logged test accuracy on screen:\n{screen}"
        # The display advanced while training ran: it showed more than one epoch count.
        assert len(seen_epochs) >= 2 and seen_epochs == sorted(seen_epochs), seen_epochs
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if train.poll() is None:
            train.kill()
