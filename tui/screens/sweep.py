"""The sweep view: one sweep's trials (sortable by the objective, the best marked), a parameter
against the objective, importances, and its workers started and stopped from here; enter opens
a trial's run in the dashboard."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ddpcifar.runs import detached
from tui.screens.confirm import ConfirmScreen
from tui.sweeps import SweepView, read_sweep
from tui.widgets.line_chart import LineChart, Series

STATE_STYLE = {"complete": "cyan", "pruned": "dim", "running": "bold green", "fail": "bold red",
               "waiting": "blue"}


class SweepLoaded(Message):
    def __init__(self, view: SweepView) -> None:
        super().__init__()
        self.view = view


class SweepScreen(Screen[str | None]):
    """Dismissed with the run name of a trial to open (or None)."""

    BINDINGS = [
        Binding("escape,q", "close", "back"),
        Binding("o", "sort", "sort by objective"),
        Binding("p", "next_param", "next parameter"),
        Binding("g", "start_worker", "start a worker"),
        Binding("k", "stop_workers", "stop workers"),
        Binding("enter", "open_trial", "open trial", show=False),
    ]

    def __init__(self, sweep_dir: Path, poll_interval: float = 2.0) -> None:
        super().__init__()
        self.sweep_dir = sweep_dir
        self.poll_interval = max(poll_interval, 1.0)
        self.view: SweepView | None = None
        self.sort_by_objective = True
        self.param = 0

    def compose(self) -> ComposeResult:
        yield Static(f"sweep {self.sweep_dir.name}: loading…", id="sweep-summary")
        with Horizontal(id="sweep-body"):
            yield DataTable(id="sweep-trials", cursor_type="row", zebra_stripes=True)
            with Vertical(id="sweep-side"):
                yield LineChart(id="sweep-scatter")
                yield Static("", id="sweep-importances")
        yield Static("", id="sweep-workers")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sweep-scatter").border_title = "parameter vs objective"
        self.query_one("#sweep-importances").border_title = "importances"
        self.query_one(DataTable).focus()
        self._load()
        self.set_interval(self.poll_interval, self._load)

    @work(thread=True, exclusive=True, group="sweep")
    def _load(self) -> None:
        self.post_message(SweepLoaded(read_sweep(self.sweep_dir)))

    def on_sweep_loaded(self, message: SweepLoaded) -> None:
        self.view = message.view
        self._draw()

    def _draw(self) -> None:
        view = self.view
        if view is None:
            return
        summary = self.query_one("#sweep-summary", Static)
        if view.error:
            summary.update(f"⚠ {view.error}")
            return
        summary.update(view.summary)
        self._draw_table(view)
        self._draw_scatter(view)
        imp = view.importances
        width = 24
        lines = [f"{k[-22:]:>22} {'█' * max(1, round(v * width))} {v:.2f}" for k, v in imp.items()]
        self.query_one("#sweep-importances", Static).update(
            "\n".join(lines) or "(after two complete trials)")
        workers = ", ".join(str(p) for p in view.workers) or "none"
        self.query_one("#sweep-workers", Static).update(
            f"workers on this machine: {workers}   (g: start one, k: stop them; "
            f"a worker runs `python -m ddpcifar.sweep run {view.path}`)")

    def _rows(self, view: SweepView) -> list[dict]:
        rows = list(view.rows)
        if self.sort_by_objective:
            sign = -1 if view.maximize else 1
            rows.sort(key=lambda r: (r["value"] is None, sign * (r["value"] or 0), r["number"]))
        return rows

    def _draw_table(self, view: SweepView) -> None:
        table = self.query_one(DataTable)
        current = table.cursor_row
        table.clear(columns=True)
        table.add_column("#", key="n")
        table.add_column("state", key="state")
        for p in view.space:
            table.add_column(p.rsplit(".", 1)[-1], key=f"p:{p}")
        table.add_column(view.metric, key="value")
        table.add_column("test top-1", key="test")
        table.add_column("epochs", key="epochs")
        for r in self._rows(view):
            best = r["number"] == view.best
            mark = Text(f"★ {r['number']}" if best else f"  {r['number']}",
                        style="bold yellow" if best else "")
            params = [_fmt(r["params"].get(p)) for p in view.space]
            value = "–" if r["value"] is None else f"{r['value']:.4f}"
            test = "–" if r["test_top1"] is None else f"{r['test_top1']:.4f}"
            table.add_row(mark, Text(r["state"], style=STATE_STYLE.get(r["state"], "")), *params,
                          value, test, str(r["epochs"]), key=str(r["number"]))
        if table.row_count:
            table.move_cursor(row=min(current, table.row_count - 1), animate=False)

    def _draw_scatter(self, view: SweepView) -> None:
        chart = self.query_one("#sweep-scatter", LineChart)
        if not view.space:
            chart.empty_text = "no parameters (a seeds-only sweep)"
            chart.set_series([])
            return
        name = view.space[self.param % len(view.space)]
        done = [r for r in view.rows if r["value"] is not None
                and isinstance(r["params"].get(name), (int, float))]
        chart.border_title = f"{name} vs {view.metric}  (p: next)"
        if not done:
            chart.empty_text = "no complete trial yet"
            chart.set_series([])
            return
        x = np.array([float(r["params"][name]) for r in done])
        log = bool(len(x)) and x.min() > 0 and x.max() / x.min() > 20
        y = np.array([r["value"] for r in done], dtype=float)
        series = [Series("trials", np.log10(x) if log else x, y, "cyan", points=True)]
        best = [r for r in done if r["number"] == view.best]
        if best:
            bx = float(best[0]["params"][name])
            series.append(Series("best", np.array([math.log10(bx) if log else bx]),
                                 np.array([best[0]["value"]]), "yellow", points=True))
        if log:
            chart.border_title += "  (x: log10)"
        chart.set_series(series)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_sort(self) -> None:
        self.sort_by_objective = not self.sort_by_objective
        self._draw()

    def action_next_param(self) -> None:
        self.param += 1
        self._draw()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open_trial()

    def action_open_trial(self) -> None:
        table = self.query_one(DataTable)
        if self.view is None or not table.row_count:
            return
        number = int(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))
        row = next((r for r in self.view.rows if r["number"] == number), None)
        if row and row["runs"]:
            self.dismiss(f"{self.sweep_dir.name}/{Path(row['runs'][0]).name}")
        else:
            self.notify(f"trial {number} has no run yet", severity="warning")

    def action_start_worker(self) -> None:
        def start(yes: bool | None) -> None:
            if not yes:
                return
            argv = detached.python_module("ddpcifar.sweep", "run", str(self.sweep_dir))
            proc = detached.spawn(argv, log=self.sweep_dir / "sweep.log", env=detached.repo_env())
            self.notify(f"started a worker (pid {proc.pid}); its output: "
                        f"{self.sweep_dir / 'sweep.log'}")
            self._load()

        self.app.push_screen(ConfirmScreen(
            f"Start a worker for {self.sweep_dir.name}?",
            "It runs trials until the sweep has its count, detached from the dashboard.",
            "start"), start)

    def action_stop_workers(self) -> None:
        pids = self.view.workers if self.view else []
        if not pids:
            self.notify("no worker of this sweep runs on this machine", severity="warning")
            return

        def stop(yes: bool | None) -> None:
            if not yes:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.notify(f"SIGTERM sent to {len(pids)} worker(s): each stops its trial cleanly "
                        "(it is retried later)")

        self.app.push_screen(ConfirmScreen(
            f"Stop the workers of {self.sweep_dir.name}?",
            f"{len(pids)} worker(s); their current trials stop cleanly and are run again by "
            "the next worker.", "stop them"), stop)


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
