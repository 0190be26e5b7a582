"""The run list: one row per run, sortable by any column or metric, filtered by a query
(name, state, model, tags, spec fields: ddpcifar.runs.select)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from ddpcifar.errors import UserError
from ddpcifar.runs.present import duration, pct, rate, state_label
from ddpcifar.runs.reader import RunInfo
from ddpcifar.runs.select import RunFilter, parse_query, select

STATE_STYLE = {"running": "bold green", "finished": "cyan", "failed": "bold red",
               "lost": "yellow", "stopped": "magenta", "queued": "blue", "pruned": "dim",
               "remote": "cyan", "unreadable": "magenta"}


def _state(r: RunInfo) -> Text:
    return Text(state_label(r), style=STATE_STYLE.get(r.state, ""))


# (header, sort key of ddpcifar.runs.select, cell text)
COLUMNS: list[tuple[str, str, Callable[[RunInfo], str | Text]]] = [
    ("name", "name", lambda r: r.name),
    ("model", "model", lambda r: r.model),
    ("status", "state", _state),
    ("epoch", "epoch", lambda r: f"{r.epoch}/{r.epochs}"),
    ("best top-1", "best_top1", lambda r: pct(r.best_top1)),
    ("last top-1", "last_top1", lambda r: pct(r.last_top1)),
    ("TTA", "top1_tta", lambda r: pct(r.top1_tta)),
    ("val", "val_top1", lambda r: pct(r.val_top1)),
    ("elapsed", "elapsed_s", lambda r: duration(r.elapsed_s)),
    ("img/s", "images_per_s", lambda r: rate(r.images_per_s)),
    ("tags", "name", lambda r: ",".join(r.tags)),
]
SORTABLE = [i for i, (header, _, _) in enumerate(COLUMNS) if header != "tags"]


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
        self.sort_metric: str | None = None  # a metric chosen by name, not a column
        self.sort_reverse = False
        self.filter_text = ""
        self.filter = RunFilter()
        self.filter_error: str | None = None
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
        """Filter by a query (ddpcifar.runs.select); a bad one keeps the last good filter."""
        self.filter_text = text.strip()
        try:
            self.filter = parse_query(self.filter_text)
            self.filter_error = None
        except UserError as err:
            self.filter_error = str(err)
        self._rebuild()

    @property
    def sort_key(self) -> str:
        return self.sort_metric or COLUMNS[self.sort_column][1]

    @property
    def sort_label(self) -> str:
        return self.sort_metric or COLUMNS[self.sort_column][0]

    def cycle_sort(self) -> str:
        at = SORTABLE.index(self.sort_column) if self.sort_metric is None else -1
        self.sort_column = SORTABLE[(at + 1) % len(SORTABLE)]
        self.sort_metric = None
        self._sort_changed()
        return COLUMNS[self.sort_column][0]

    def sort_by_metric(self, key: str) -> None:
        """Sort by any metric of ddpcifar.runs.select (a column's own key selects the column)."""
        columns = [i for i, (_, k, _) in enumerate(COLUMNS) if k == key and i in SORTABLE]
        self.sort_metric = None if columns else key
        if columns:
            self.sort_column = columns[0]
        self._sort_changed()

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._sort_changed()

    def _sort_changed(self) -> None:
        for header, _, _ in COLUMNS:  # an arrow on the sort column's header
            sorted_here = self.sort_metric is None and header == COLUMNS[self.sort_column][0]
            arrow = (" ▼" if self.sort_reverse else " ▲") if sorted_here else "  "
            self.columns[header].label = Text(header + arrow)  # type: ignore[index]
        self._shown = []  # force a full redraw, headers included
        self._rebuild()

    def _rebuild(self) -> None:
        """Redraw rows only when what is shown changed, keeping the cursor on the same run."""
        rows = select(self.runs, self.filter, self.sort_key, self.sort_reverse)
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
