"""The `?` screen: every key binding in one place."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# (keys, where, what)
KEYS = [
    ("↑ ↓", "run list", "select a run"),
    ("space", "run list", "mark / unmark a run for comparison"),
    ("c", "anywhere", "compare: overlay the marked runs' test curves"),
    ("/", "anywhere", "filter the run list by name or model"),
    ("esc", "anywhere", "back to the run list"),
    ("o  O", "anywhere", "next sort column / reverse the sort"),
    ("1 2 3 4", "anywhere", "curves, samples, classes, details tab"),
    ("x", "curves", "x axis: epoch or optimizer step"),
    ("s  S", "curves", "more / less EMA smoothing"),
    ("← → ↑ ↓", "samples", "move between images"),
    ("pgup pgdn home end", "samples", "page through the images"),
    ("t  T", "samples", "filter by true class (next / previous)"),
    ("p  P", "samples", "filter by predicted class (next / previous)"),
    ("f", "samples", "clear the class filters"),
    ("z", "samples", "small (16x16) or full-size (32x32) tiles"),
    ("[  ]", "samples", "previous / next evaluation"),
    ("enter", "samples", "enlarge the image (← → step, esc closes)"),
    ("?", "anywhere", "this help"),
    ("q", "anywhere", "quit"),
]


def help_text(runs_dir: str, poll_interval: float) -> Group:
    table = Table(box=box.SIMPLE_HEAD, expand=True, padding=(0, 1))
    table.add_column("key", style="bold yellow", no_wrap=True)
    table.add_column("where", style="dim")
    table.add_column("what")
    for keys, where, what in KEYS:
        table.add_row(keys, where, what)
    return Group(
        Text.assemble(("ddpcifar dashboard", "bold"), f" · reading {runs_dir} every "
                      f"{poll_interval:g} s (never writing)"),
        table,
        Text("stale: status says running, but its process is gone and it has not written "
             "for a minute.", style="dim"),
    )


class HelpScreen(ModalScreen[None]):
    """Key bindings as a table; any of escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, runs_dir: str, poll_interval: float) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.poll_interval = poll_interval

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(help_text(self.runs_dir, self.poll_interval))
