"""The Textual application: a thin shell that owns the inputs and shows the dashboard screen.

Runs launched from it are detached (ddpcifar.runs): quitting the dashboard leaves them running.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.screens.dashboard import DashboardScreen
from tui.screens.help import HelpScreen


class DashboardApp(App[None]):
    """Follows every run under `runs_dir`; `clock` (unix time) is injectable for tests."""

    TITLE = "ddpcifar"
    # One stylesheet per screen, all loaded here (a default screen's own CSS_PATH is not).
    CSS_PATH = ["app.tcss", "screens/dashboard.tcss", "screens/help.tcss",
                "screens/image_screen.tcss", "screens/new_run.tcss", "screens/confirm.tcss", "screens/sweep.tcss"]
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, runs_dir: str | os.PathLike, *, poll_interval: float = 1.0,
                 clock: Callable[[], float] = time.time, specs_dir: str | os.PathLike = "specs",
                 cwd: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.poll_interval = poll_interval
        self.clock = clock
        self.specs_dir = Path(specs_dir)
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()

    def get_default_screen(self) -> Screen:
        return DashboardScreen(self.runs_dir, self.poll_interval, self.clock,
                               specs_dir=self.specs_dir, cwd=self.cwd)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(str(self.runs_dir), self.poll_interval))
