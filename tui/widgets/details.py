"""The Details tab: the run's resolved spec.json and summary.json, pretty and syntax highlighted."""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static


class DetailsPanel(Horizontal):
    """Two scrollable panes; `show()` takes the JSON text (or None when the file is absent)."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="spec-pane"):
            yield Static("", id="spec-json")
        with VerticalScroll(id="summary-pane"):
            yield Static("", id="summary-json")

    def on_mount(self) -> None:
        self.query_one("#spec-pane").border_title = "spec.json"
        self.query_one("#summary-pane").border_title = "summary.json"

    def show(self, spec: str | None, summary: str | None) -> None:
        for target, body, absent in (("#spec-json", spec, "spec.json not written"),
                                     ("#summary-json", summary, "no summary.json yet (written when the run finishes)")):
            widget = self.query_one(target, Static)
            if body is None:
                widget.update(Text(absent, style="dim"))
            else:
                widget.update(Syntax(body, "json", theme="ansi_dark", background_color="default",
                                     word_wrap=True))
