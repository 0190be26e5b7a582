"""The real TUI in a real terminal (tmux), following a run that a writer thread keeps extending."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from tui_fixtures import append_epoch, eval_values, make_fixture_runs, tmux_capture

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_tmux_shows_live_accuracy(tmp_path: Path) -> None:
    runs = make_fixture_runs(tmp_path / "runs")
    last_epoch = 8
    expected = f"{eval_values(last_epoch, 0.85, 3)['top1'] * 100:.2f}%"  # what append_epoch writes
    stop = threading.Event()

    def writer() -> None:  # the trainer's side: one epoch every 0.3 s while the TUI is open
        stop.wait(1.0)
        for epoch in range(4, last_epoch + 1):
            if stop.is_set():
                return
            append_epoch(runs["era_live"], epoch)
            time.sleep(0.3)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        screen = tmux_capture(tmp_path / "runs", wait_for=expected, timeout=40)
    finally:
        stop.set()
        thread.join()
    assert "era_live" in screen
    assert expected in screen, screen
    assert f"{last_epoch}/10" in screen
