"""The Curves tab: loss, top-1 and learning-rate charts for one run, or several runs overlaid."""

from __future__ import annotations

from typing import Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from tui.metrics import Curves, ema
from tui.widgets.line_chart import LineChart, Series

TRAIN_COLOR = "#5fafff"
TEST_COLOR = "#ffaf00"
# Colours for runs overlaid in compare mode, in the order the runs are listed.
RUN_COLORS = ("#5fafff", "#ffaf00", "#87d75f", "#ff5f87", "#af87ff", "#5fd7d7", "#d7d75f", "#bcbcbc")
SMOOTHING_STEPS = (0.0, 0.6, 0.8, 0.9, 0.95, 0.99)


def _pct(v: float) -> str:
    return f"{v:.3g}%" if abs(v) < 100 else f"{v:.0f}%"


class CurvesPanel(Vertical):
    """Three charts plus a status line and a legend; `show()` is the only way data gets in."""

    def compose(self) -> ComposeResult:
        yield Static("", id="curves-status")
        yield Static("", id="curves-legend")
        with Horizontal(id="charts"):
            yield LineChart(id="chart-loss")
            yield LineChart(id="chart-top1", y_format=_pct)
            yield LineChart(id="chart-lr")

    def on_mount(self) -> None:
        self.query_one("#chart-loss", LineChart).border_title = "loss"
        self.query_one("#chart-top1", LineChart).border_title = "top-1 accuracy"
        self.query_one("#chart-lr", LineChart).border_title = "learning rate"

    def show(self, runs: Sequence[str], curves: Mapping[str, Curves | None], *,
             x_axis: str, smoothing: float, note: str | None = None) -> None:
        """Plot `runs` (one run: train vs test; several: test curves per run)."""
        status = self.query_one("#curves-status", Static)
        legend = self.query_one("#curves-legend", Static)
        loss, top1, lr = (self.query_one(f"#chart-{k}", LineChart) for k in ("loss", "top1", "lr"))
        xk = "step" if x_axis == "step" else "epoch"
        smooth = f"EMA {smoothing:g}" if smoothing else "off"
        if not runs:
            status.update("select a run")
            legend.update("")
            for chart in (loss, top1, lr):
                chart.set_series([])
            return
        if len(runs) == 1:
            data = curves.get(runs[0])
            lines = data.lines if data else 0
            status.update(note or f"{runs[0]} · x: {xk} · smoothing: {smooth} · {lines} lines")
            legend.update(Text.assemble(("━━ train  ", TRAIN_COLOR), ("━━ test", TEST_COLOR)))
            if data is None:
                for chart in (loss, top1, lr):
                    chart.set_series([])
                return
            tx = getattr(data, f"train_{xk}")
            ex = getattr(data, f"eval_{xk}")
            sm = (lambda a: ema(a, smoothing))
            loss.set_series([Series("train", tx, sm(data.train_loss), TRAIN_COLOR),
                             Series("test", ex, sm(data.eval_loss), TEST_COLOR)])
            top1.set_series([Series("train", tx, sm(data.train_top1) * 100, TRAIN_COLOR),
                             Series("test", ex, sm(data.eval_top1) * 100, TEST_COLOR)])
            lr.set_series([Series("lr", tx, data.lr, TRAIN_COLOR)])
            return
        status.update(note or f"comparing {len(runs)} runs (test loss / test top-1 / lr) · "
                      f"x: {xk} · smoothing: {smooth}")
        parts: list[tuple[str, str]] = []
        loss_s, top1_s, lr_s = [], [], []
        for i, name in enumerate(runs):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            parts.append((f"━━ {name}  ", color))
            data = curves.get(name)
            if data is None:
                continue
            ex = getattr(data, f"eval_{xk}")
            loss_s.append(Series(name, ex, ema(data.eval_loss, smoothing), color))
            top1_s.append(Series(name, ex, ema(data.eval_top1, smoothing) * 100, color))
            lr_s.append(Series(name, getattr(data, f"train_{xk}"), data.lr, color))
        legend.update(Text.assemble(*parts))
        loss.set_series(loss_s)
        top1.set_series(top1_s)
        lr.set_series(lr_s)


__all__ = ["CurvesPanel", "SMOOTHING_STEPS", "RUN_COLORS"]
