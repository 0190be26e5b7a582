"""Headless Pilot tests of the dashboard: navigation, live updates and damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from textual.widgets import Input, Static, TabbedContent

from tui_fixtures import (NOW, append_epoch, make_app, make_fixture_runs, select_run, sync,
                          wait_until, write_run)
from tui.app import DashboardApp
from tui.screens.help import HelpScreen
from tui.screens.image_screen import ImageScreen
from tui.widgets.line_chart import LineChart
from tui.widgets.run_table import RunTable
from tui.widgets.sample_grid import SampleGrid

SIZE = (120, 40)


def table(app: DashboardApp) -> RunTable:
    return app.screen_stack[0].query_one(RunTable)


def text_of(app: DashboardApp, selector: str) -> str:
    return str(app.screen_stack[0].query_one(selector, Static).content)


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    make_fixture_runs(tmp_path / "runs")
    return tmp_path / "runs"


@sync
async def test_run_list_sort_and_filter(runs: Path) -> None:
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        await wait_until(pilot, lambda: t.row_count == 5)
        assert t.visible_names == ["broken", "era_live", "era_short", "ghost", "resnet_long"]
        status = {n: str(t.get_row(n)[3]) for n in t.visible_names}
        assert status == {"broken": "failed", "era_live": "running", "era_short": "finished",
                          "ghost": "lost", "resnet_long": "finished"}
        assert str(t.get_row("era_live")[9]) == "1h02m"  # NOW - T0 from the injected clock
        for _ in range(4):  # name -> model -> status -> epoch -> best top-1
            await pilot.press("o")
        assert "sort: best top-1" in text_of(app, "#sort-label")
        assert t.visible_names[-1] == "resnet_long" and t.visible_names[0] == "broken"
        await pilot.press("O")
        assert t.visible_names[0] == "resnet_long"
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"era")
        assert t.visible_names == ["era_short", "era_live"]  # still sorted by best, reversed
        await pilot.press("ctrl+a", "ctrl+k", *"resnet8")  # the model column matches too
        assert sorted(t.visible_names) == ["broken", "ghost", "resnet_long"]
        await pilot.press("escape")
        assert app.focused is t


@sync
async def test_selecting_runs_switches_curves_and_tabs(runs: Path) -> None:
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, "resnet_long")
        dash = app.screen_stack[0]
        loss = dash.query_one("#chart-loss", LineChart)
        await wait_until(pilot, lambda: len(loss.series) == 2 and len(loss.series[1].x) == 8)
        assert "resnet_long · x: epoch" in text_of(app, "#curves-status")
        assert loss.series[0].x.max() == pytest.approx(8.0)
        await pilot.press("x")
        assert loss.series[0].x.max() == 160  # 8 epochs x 20 steps
        assert "x: step" in text_of(app, "#curves-status")
        raw = loss.series[0].y.copy()
        await pilot.press("s")
        assert "smoothing: EMA 0.6" in text_of(app, "#curves-status")
        assert not np.allclose(loss.series[0].y, raw) and loss.series[0].y[0] == raw[0]
        await pilot.press("3")
        tabs = dash.query_one(TabbedContent)
        assert tabs.active == "classes"
        await wait_until(pilot, lambda: "from summary.json" in text_of(app, "#eval-title"))
        assert "evaluation after epoch 8" in text_of(app, "#eval-title")
        assert "airplane" in str(dash.query_one("#confusion", Static).content)
        await pilot.press("4")
        assert tabs.active == "details"
        await wait_until(pilot, lambda: "resnet_long" in str(
            dash.query_one("#summary-json", Static).content.code))  # type: ignore[union-attr]
        await pilot.press("escape", "up")
        await wait_until(pilot, lambda: dash.selected == "ghost")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is dash


@sync
async def test_samples_paging_filters_and_enlarged_view(runs: Path) -> None:
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, "resnet_long")
        await pilot.press("2")
        grid = app.screen_stack[0].query_one(SampleGrid)
        assert app.focused is grid
        await wait_until(pilot, lambda: grid.samples is not None)
        assert grid.samples.epoch == 8 and grid.page_size == 8
        assert grid.header().endswith("1-8 of 40")
        await pilot.press("pagedown")
        assert grid.cursor == 8 and grid.header().endswith("9-16 of 40")
        await pilot.press("right", "down")
        assert grid.cursor == 13
        await pilot.press("pageup", "home")
        assert grid.cursor == 0
        await pilot.press("end")
        assert grid.cursor == 39 and grid.header().endswith("33-40 of 40")
        # filters: true class = airplane (t once), then predicted = automobile (p twice)
        s = grid.samples
        await pilot.press("t")
        assert "true: airplane" in grid.header()
        assert grid.order == np.nonzero(s.true == 0)[0].tolist() and grid.cursor == 0
        await pilot.press("T", "T")  # back past "all" to truck
        assert "true: truck" in grid.header()
        await pilot.press("f", "p", "p")
        assert "true: all · pred: automobile" in grid.header()
        expected = np.nonzero(s.pred == 1)[0].tolist()
        assert grid.order == expected and expected
        await pilot.press("enter")
        assert isinstance(app.screen, ImageScreen)
        view = app.screen
        first = expected[0]
        caption_text = str(view.query_one("#image-caption", Static).content)
        assert f"test image #{int(s.index[first])}" in caption_text
        assert f"sample 1 of {len(expected)}" in caption_text
        assert "→ automobile (" in caption_text
        assert view.query_one("#image").scale == 2  # 64x32 cells fit in 120x40
        await pilot.press("right")
        assert f"sample 2 of {len(expected)}" in str(view.query_one("#image-caption", Static).content)
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]
        await pilot.press("f", "[")
        await wait_until(pilot, lambda: grid.samples is not None and grid.samples.epoch == 7)
        await pilot.press("z")
        assert grid.tile == 32 and grid.page_size == 3


@sync
async def test_compare_overlays_marked_runs(runs: Path) -> None:
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, "era_short")
        await pilot.press("space")
        await select_run(pilot, app, "resnet_long")
        await pilot.press("space", "c")
        dash = app.screen_stack[0]
        top1 = dash.query_one("#chart-top1", LineChart)
        await wait_until(pilot, lambda: [s.label for s in top1.series] == ["era_short", "resnet_long"])
        assert "comparing 2 runs" in text_of(app, "#curves-status")
        legend = text_of(app, "#curves-legend")
        assert "era_short" in legend and "resnet_long" in legend
        assert str(table(app).get_row("era_short")[0]) == "●"
        await pilot.press("c")
        assert [s.label for s in top1.series] == ["train", "test"]


@sync
async def test_growing_run_directory_updates_list_and_curves(runs: Path) -> None:
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, "era_live")
        dash = app.screen_stack[0]
        loss = dash.query_one("#chart-loss", LineChart)
        t = table(app)
        await wait_until(pilot, lambda: len(loss.series) == 2 and len(loss.series[1].x) == 3)
        values = append_epoch(runs / "era_live", 4)
        await wait_until(pilot, lambda: len(loss.series[1].x) == 4)
        assert loss.series[1].y[-1] == values["loss"]
        await wait_until(pilot, lambda: str(t.get_row("era_live")[4]) == "4/10")
        assert str(t.get_row("era_live")[6]) == f"{values['top1'] * 100:.2f}%"
        await pilot.press("2")
        grid = dash.query_one(SampleGrid)
        await wait_until(pilot, lambda: grid.samples is not None and grid.samples.epoch == 4)
        write_run(runs, "newcomer", model="vit_tiny", done=1)
        await wait_until(pilot, lambda: "newcomer" in t.visible_names)
        assert str(t.get_row("newcomer")[2]) == "vit_tiny"


@sync
async def test_damaged_files_show_notices(runs: Path) -> None:
    live = runs / "era_live"
    with open(live / "metrics.jsonl", "a") as fh:
        fh.write("this is not json\n")
        fh.write('{"kind": "eval", "epoch": 4, "st')  # half-written: held back, no error
    (runs / "era_short" / "metrics.jsonl").unlink()
    (runs / "era_short" / "summary.json").write_text('{"final": ')
    (runs / "ghost" / "status.json").write_text('{"state": "runn')
    (runs / "resnet_long" / "samples" / "epoch_0009.npz").write_bytes(b"not a zip at all")
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        t = table(app)
        await wait_until(pilot, lambda: t.row_count == 5)
        await wait_until(pilot, lambda: "ghost/status.json: unreadable" in text_of(app, "#notice"))
        assert str(t.get_row("ghost")[3]) == "unreadable"
        await select_run(pilot, app, "era_live")
        await wait_until(pilot, lambda: "era_live/metrics.jsonl line 16: not JSON" in text_of(app, "#notice"))
        loss = app.screen_stack[0].query_one("#chart-loss", LineChart)
        await wait_until(pilot, lambda: len(loss.series) == 2)
        assert len(loss.series[1].x) == 3  # the half-written 4th eval is not shown
        await select_run(pilot, app, "era_short")
        await wait_until(pilot, lambda: "no metrics.jsonl yet" in text_of(app, "#curves-status"))
        await wait_until(pilot, lambda: "era_short/summary.json: not valid JSON" in text_of(app, "#notice"))
        await select_run(pilot, app, "resnet_long")
        await pilot.press("2")
        grid = app.screen_stack[0].query_one(SampleGrid)
        await wait_until(pilot, lambda: "epoch_0009.npz: cannot read" in grid.header())
        assert "resnet_long/samples/epoch_0009.npz: cannot read" in text_of(app, "#notice")
        await pilot.press("[")  # the previous, intact archive still loads
        await wait_until(pilot, lambda: grid.samples is not None and grid.samples.epoch == 8)
        # the held-back line completes: the curve grows, the app never crashed
        with open(live / "metrics.jsonl", "a") as fh:
            fh.write('ep": 80, "time": 1, "values": {"loss": 0.5, "top1": 0.7}}\n')
        await select_run(pilot, app, "era_live")
        await wait_until(pilot, lambda: len(loss.series[1].x) == 4)
        assert app.is_running


@sync
async def test_empty_and_missing_runs_dir(tmp_path: Path) -> None:
    app = make_app(tmp_path / "absent")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "runs directory not found" in text_of(app, "#notice"))
        assert "select a run" in text_of(app, "#curves-status")


@sync
async def test_failed_run_shows_its_error(runs: Path) -> None:
    app = make_app(runs)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, "broken")
        assert text_of(app, "#curves-status") == "broken failed: RuntimeError: NCCL timeout"
