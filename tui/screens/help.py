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
    ("/", "anywhere", "filter: words (name, model), state:running,queued, model:era_s9, "
                      "tag:baseline, spec fields like optimizer.lr>=0.01"),
    ("esc", "anywhere", "back to the run list"),
    ("o  O", "anywhere", "next sort column / reverse the sort"),
    ("m", "anywhere", "sort by any metric (TTA, validation, time to accuracy, ...)"),
    ("1 2 3 4 5 6", "anywhere", "curves, samples, classes, details, log, card tab (l: log); "
                                "the card is the run's MODEL_CARD.md, its charts as file paths"),
    ("n", "anywhere", "new run: a spec from specs/ or the selected run's, checked as you type"),
    ("k", "run list", "stop the run (checkpoint, then stopped); again: kill; queued: cancel"),
    ("r", "run list", "resume a stopped, failed or lost run from its last checkpoint"),
    ("C", "run list", "clone the run with changes (the new-run form)"),
    ("e", "run list", "edit the run's tags"),
    ("+  -", "run list", "move a queued run up / down the queue"),
    ("w", "anywhere", "the sweep view (the selected trial's sweep, or pick one)"),
    ("o p g k enter", "sweep view", "sort by objective / next parameter / start a worker / "
                                     "stop its workers / open the trial's run"),
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
                      f"{poll_interval:g} s; it writes only through the actions below"),
        table,
        Text("queued #k: waiting for a slot (python -m ddpcifar.runs queue slots N); starting: "
             "launched, not training yet; lost: its processes are gone without a word (its "
             "log's last lines show above the curves); remote: running on another host.",
             style="dim"),
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
