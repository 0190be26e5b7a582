"""The Card tab: the selected run's MODEL_CARD.md (ddpcifar.card) rendered as markdown.

A terminal cannot show the card's PNG charts, so each image link becomes the image's path; the
`<details>` wrapper of the spec (for GitHub) becomes a plain heading. The file is read in a
thread worker that only posts `CardPanel.Loaded`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Markdown, Static

from ddpcifar.card import CARD

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_SUMMARY = re.compile(r"^<details><summary>(.*)</summary>$", re.MULTILINE)
_DETAILS_END = re.compile(r"^</details>$", re.MULTILINE)


def terminal_markdown(text: str, run_path: Path) -> str:
    """The card as a terminal can show it: images as their paths, no HTML."""
    text = _IMAGE.sub(lambda m: f"image ({m.group(1)}): `{run_path / m.group(2)}`", text)
    text = _SUMMARY.sub(lambda m: f"**{m.group(1)}**", text)
    return _DETAILS_END.sub("", text)


class CardPanel(Vertical):
    """A one-line note above the rendered card; `show()` loads a run's card."""

    @dataclass
    class Loaded(Message):
        """A run's card as markdown, or None and the reason there is none."""

        run: str
        markdown: str | None
        note: str

    def __init__(self, **kwargs) -> None:  # noqa: ANN003 - Widget's own arguments
        super().__init__(**kwargs)
        self.run: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="card-note")
        with VerticalScroll(id="card-scroll"):
            yield Markdown("", id="card-markdown")

    def show(self, run: str | None, path: Path | None) -> None:
        """Load the card of `run` (at `path`), or show that no run is selected."""
        self.run = run
        if run is None or path is None:
            self._put("no run selected", None)
            return
        self._load(run, path)

    @work(thread=True, exclusive=True, group="card")
    def _load(self, run: str, path: Path) -> None:
        card = path / CARD
        try:
            text = card.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            self.post_message(self.Loaded(run, None, f"{run} has no model card yet: it is "
                                          "written when the run ends (python -m ddpcifar.card "
                                          "writes it now)"))
            return
        except OSError as err:
            self.post_message(self.Loaded(run, None, f"cannot read {card}: {err.strerror}"))
            return
        self.post_message(self.Loaded(run, terminal_markdown(text, path),
                                      f"{card} (charts: open the PNG files named below)"))

    def on_card_panel_loaded(self, message: Loaded) -> None:
        if message.run == self.run:
            self._put(message.note, message.markdown)

    def _put(self, note: str, markdown: str | None) -> None:
        self.query_one("#card-note", Static).update(note)
        self.query_one("#card-scroll").display = markdown is not None
        self.query_one("#card-markdown", Markdown).update(markdown or "")
