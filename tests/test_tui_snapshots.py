"""SVG snapshots of the dashboard at 120x40 with fixed data and a fixed clock.

Regenerate after an intended visual change with
`python -m pytest tests/test_tui_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

import pytest
from textual.pilot import Pilot

from tui_fixtures import make_app, make_fixture_runs, select_run, wait_until
from tui.widgets.line_chart import LineChart
from tui.widgets.sample_grid import SampleGrid

SIZE = (120, 40)


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    make_fixture_runs(tmp_path / "runs")
    return tmp_path / "runs"


def prepare(run: str, *keys: str, ready: Callable[[object], bool] | None = None
            ) -> Callable[[Pilot], Awaitable[None]]:
    """A run_before that selects `run`, waits for its data, then presses `keys`."""
    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        await select_run(pilot, app, run)
        dash = app.screen_stack[0]
        loss = dash.query_one("#chart-loss", LineChart)
        await wait_until(pilot, lambda: len(loss.series) == 2)
        await wait_until(pilot, lambda: dash.query_one(SampleGrid).samples is not None
                         or run == "broken")
        await wait_until(pilot, lambda: run in dash.summaries)  # details loaded
        for key in keys:
            await pilot.press(key)
        if ready is not None:
            await wait_until(pilot, lambda: ready(dash))
        await pilot.pause()
    return run_before


def test_snapshot_curves(runs: Path, snap_compare) -> None:
    assert snap_compare(make_app(runs), terminal_size=SIZE, run_before=prepare("resnet_long"))


def test_snapshot_samples(runs: Path, snap_compare) -> None:
    assert snap_compare(make_app(runs), terminal_size=SIZE,
                        run_before=prepare("resnet_long", "2", "right"))


def test_snapshot_classes(runs: Path, snap_compare) -> None:
    assert snap_compare(make_app(runs), terminal_size=SIZE, run_before=prepare("era_live", "3"))


def test_snapshot_details(runs: Path, snap_compare) -> None:
    assert snap_compare(make_app(runs), terminal_size=SIZE, run_before=prepare("era_short", "4"))


def test_snapshot_compare(runs: Path, snap_compare) -> None:
    def both(dash: object) -> bool:
        top1 = dash.query_one("#chart-top1", LineChart)  # type: ignore[attr-defined]
        return len(top1.series) == 3
    assert snap_compare(make_app(runs), terminal_size=SIZE,
                        run_before=prepare("era_live", "space", "down", "space", "down", "down",
                                           "space", "c", "s", ready=both))


def test_snapshot_enlarged_image(runs: Path, snap_compare) -> None:
    assert snap_compare(make_app(runs), terminal_size=SIZE,
                        run_before=prepare("resnet_long", "2", "t", "t", "enter"))
