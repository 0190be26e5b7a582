"""The run list: one row per run, sortable by any column, filtered by name or model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from ddpcifar.runs.reader import RunInfo

STATE_STYLE = {"running": "bold green", "finished": "cyan", "failed": "bold red",
               "lost": "yellow", "stopped": "magenta", "queued": "blue", "pruned": "dim", "remote": "cyan", "unreadable": "magenta"}


def fmt_duration(seconds: float | None) -> str:
    """12s, 4m05s, 1h02m."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f}%"


def _nz(v: float | None) -> float:
    return -1.0 if v is None else v


# (header, sort key, cell text); the sort key must never compare None with numbers.
COLUMNS: list[tuple[str, Callable[[RunInfo], Any], Callable[[RunInfo], str | Text]]] = [
    ("name", lambda r: r.name, lambda r: r.name),
    ("model", lambda r: r.model, lambda r: r.model),
    ("status", lambda r: r.state, lambda r: Text(r.state, style=STATE_STYLE.get(r.state, ""))),
    ("epoch", lambda r: (r.epoch, r.epochs), lambda r: f"{r.epoch}/{r.epochs}"),
    ("best top-1", lambda r: _nz(r.best_top1), lambda r: _pct(r.best_top1)),
    ("last top-1", lambda r: _nz(r.last_top1), lambda r: _pct(r.last_top1)),
    ("elapsed", lambda r: _nz(r.elapsed_s), lambda r: fmt_duration(r.elapsed_s)),
    ("img/s", lambda r: _nz(r.images_per_s),
     lambda r: "–" if r.images_per_s is None else f"{r.images_per_s:,.0f}"),
]


class RunTable(DataTable):
    """Call `set_runs()` with every run; sorting, filtering and marks are applied here."""

    BINDINGS = [Binding("space", "toggle_mark", "mark for compare")]

    @dataclass
    class MarksChanged(Message):
        marked: frozenset[str]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.runs: list[RunInfo] = []
        self.sort_column = 0
        self.sort_reverse = False
        self.filter_text = ""
        self.marked: set[str] = set()
        self._shown: list[tuple[Any, ...]] = []

    def on_mount(self) -> None:
        self.add_column(" ", key="mark", width=1)
        for header, _, _ in COLUMNS:
            self.add_column(header + "  ", key=header)  # room for the sort arrow
        self.columns["name"].label = Text("name ▲")  # type: ignore[index]

    @property
    def visible_names(self) -> list[str]:
        """Run names in display order (after filter and sort)."""
        return [str(row.value) for row in self.rows]

    @property
    def selected(self) -> str | None:
        """The run under the cursor."""
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def set_runs(self, runs: Sequence[RunInfo]) -> None:
        self.runs = list(runs)
        self._rebuild()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._rebuild()

    def cycle_sort(self) -> str:
        self.sort_column = (self.sort_column + 1) % len(COLUMNS)
        self._sort_changed()
        return COLUMNS[self.sort_column][0]

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._sort_changed()

    def _sort_changed(self) -> None:
        for header, _, _ in COLUMNS:  # an arrow on the sort column's header
            sorted_here = header == COLUMNS[self.sort_column][0]
            arrow = (" ▼" if self.sort_reverse else " ▲") if sorted_here else "  "
            self.columns[header].label = Text(header + arrow)  # type: ignore[index]
        self._shown = []  # force a full redraw, headers included
        self._rebuild()

    def _rebuild(self) -> None:
        """Redraw rows only when what is shown changed, keeping the cursor on the same run."""
        needle = self.filter_text
        rows = [r for r in self.runs
                if not needle or needle in r.name.lower() or needle in r.model.lower()]
        key = COLUMNS[self.sort_column][1]
        rows.sort(key=lambda r: (key(r), r.name), reverse=self.sort_reverse)
        shown = [(r.name in self.marked, *(str(cell(r)) for _, _, cell in COLUMNS)) for r in rows]
        if shown == self._shown:
            return
        if [row[1] for row in shown] == [row[1] for row in self._shown]:
            # Same runs in the same order (the usual poll: a running run ticked): patch cells.
            for r, new_row, old_row in zip(rows, shown, self._shown):
                if new_row[0] != old_row[0]:
                    self.update_cell(r.name, "mark", self._mark(r.name))
                for k, (header, _, cell) in enumerate(COLUMNS, start=1):
                    if new_row[k] != old_row[k]:
                        self.update_cell(r.name, header, cell(r))
            self._shown = shown
            return
        current = self.selected
        self._shown = shown
        self.clear()
        for r in rows:
            self.add_row(self._mark(r.name), *(cell(r) for _, _, cell in COLUMNS), key=r.name)
        names = [r.name for r in rows]
        if current in names:
            self.move_cursor(row=names.index(current), animate=False)

    def _mark(self, name: str) -> Text:
        return Text("●", style="bold magenta") if name in self.marked else Text("")

    def action_toggle_mark(self) -> None:
        name = self.selected
        if name is None:
            return
        self.marked ^= {name}
        self._rebuild()
        self.post_message(self.MarksChanged(frozenset(self.marked)))
