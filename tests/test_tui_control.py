"""The dashboard as a control room, with real processes: the new-run form validates as you
type and refuses to start an invalid spec; a run started from it is detached (it finishes after
the dashboard quits); stop, resume and clone on the selected run, each confirmed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Button, Input, Static

from runs_fixtures import (kill_leftovers, runs_cli, status, tiny_spec, train_steps, wait_for,
                           wait_state)
from tui_fixtures import select_run, sync, wait_until
from tui.app import DashboardApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.new_run import NewRunScreen

SIZE = (130, 44)


@pytest.fixture
def work(tmp_path, prepared_data):
    (tmp_path / "specs").mkdir()
    tiny_spec(tmp_path / "specs" / "tiny.json", prepared_data.data_dir, epochs=2)
    (tmp_path / "runs").mkdir()
    yield tmp_path
    leftovers = kill_leftovers(tmp_path / "runs")
    assert not leftovers, f"processes left running: {leftovers}"


def make_app(work: Path) -> DashboardApp:
    return DashboardApp(work / "runs", poll_interval=0.1, specs_dir=work / "specs", cwd=work)


async def type_into(pilot, screen, field: str, text: str) -> None:
    screen.query_one(f"#field-{field}", Input).focus()
    await pilot.press("end", *["backspace"] * 40, *text)


def error_text(screen, field: str) -> str:
    return str(screen.query_one(f"#error-{field}", Static).content)


@sync
async def test_form_shows_the_specs_own_errors_and_refuses_to_start(work: Path) -> None:
    app = make_app(work)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        start = form.query_one("#form-start", Button)
        await wait_until(pilot, lambda: not start.disabled)  # the example spec is valid
        assert str(form.query_one("#form-command", Static).content).startswith(
            "$ torchrun --standalone --nproc_per_node=1 -m ddpcifar.train specs/tiny.json")

        await type_into(pilot, form, "lr", "fast")
        assert error_text(form, "lr") == '✗ "fast": Input should be a valid number, unable ' \
                                         'to parse string as a number'
        assert start.disabled
        await type_into(pilot, form, "lr", "0.05")
        assert error_text(form, "lr") == "" and not start.disabled
        assert "--set optimizer.lr=0.05" in str(form.query_one("#form-command", Static).content)

        await type_into(pilot, form, "nproc", "3")  # 100 images per batch over 3 ranks
        assert "not divisible by the world size 3" in error_text(form, "batch")
        assert start.disabled
        await pilot.press("ctrl+s")  # refused: the form stays, nothing is written
        await pilot.pause(0.3)
        assert isinstance(app.screen, NewRunScreen)
        await type_into(pilot, form, "overrides", "train.nosuch=1")
        assert "train.nosuch: unknown key" in error_text(form, "overrides")
        await pilot.press("escape")
    assert list((work / "runs").iterdir()) == []


@sync
async def test_a_run_started_from_the_form_finishes_after_the_dashboard_quits(work: Path) -> None:
    app = make_app(work)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        await type_into(pilot, form, "name", "formrun")
        await type_into(pilot, form, "epochs", "3")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, NewRunScreen))
        run = work / "runs" / "formrun"
        await wait_until(pilot, lambda: (run / "launch.json").exists(), timeout=20)
        await wait_until(pilot, lambda: app.screen.selected == "formrun", timeout=20)
    # The dashboard is gone; the run goes on and ends on its own.
    assert status(run)["state"] in ("queued", "running")
    assert wait_state(run, {"finished", "failed"}, timeout=240)["state"] == "finished"
    launch = json.loads((run / "launch.json").read_text())
    assert launch["display"] == ("torchrun --standalone --nproc_per_node=1 -m ddpcifar.train "
                                 "specs/tiny.json --set logging.run_name=formrun "
                                 "--set train.epochs=3")
    assert json.loads((run / "spec.json").read_text())["train"]["epochs"] == 3


@sync
async def test_stop_resume_and_clone_from_the_dashboard(work: Path) -> None:
    runs_cli("launch", "specs/tiny.json", "--name", "long", "--set", "train.epochs=40", cwd=work)
    run = work / "runs" / "long"
    wait_for(lambda: train_steps(run), 120, "long's first step")
    app = make_app(work)
    async with app.run_test(size=SIZE) as pilot:
        await select_run(pilot, app, "long")
        await pilot.press("k")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: status(run)["state"] == "stopped", timeout=60)
        assert (run / "checkpoints" / "last.pt").exists()
        await wait_until(pilot, lambda: app.screen.runs["long"].state == "stopped")

        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: status(run)["state"] in ("queued", "running"))

        await pilot.press("C")
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        assert form.query_one("#field-name", Input).value == "long-2"
        await type_into(pilot, form, "lr", "0.02")
        await type_into(pilot, form, "epochs", "1")
        await pilot.press("ctrl+s")
        clone = work / "runs" / "long-2"
        await wait_until(pilot, lambda: (clone / "spec.json").exists(), timeout=20)
        await wait_until(pilot, lambda: app.screen.selected == "long-2", timeout=20)
    spec = json.loads((clone / "spec.json").read_text())
    assert spec["optimizer"]["lr"] == 0.02 and spec["train"]["epochs"] == 1
    runs_cli("stop", str(run), "--wait", "120", cwd=work, check=False)
    runs_cli("stop", str(clone), "--wait", "120", cwd=work, check=False)
    wait_for(lambda: status(clone)["state"] in ("stopped", "finished"), 120, "clone ended")
