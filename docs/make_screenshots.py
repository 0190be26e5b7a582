"""Draw the dashboard's screens as SVG for docs/tui.md, from made-up run directories.

    .venv/bin/python docs/make_screenshots.py [--out docs/img/tui]

Deterministic fixtures (tests/tui_fixtures.py) plus a queued, a stopped, a lost and a remote
run and a small sweep study: nothing is trained, nothing outside a temporary directory is
written but the SVG files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tui_fixtures import NOW, T0, dead_pid, make_fixture_runs, wait_until, write_run  # noqa: E402

from ddpcifar.atomic import write_json  # noqa: E402
from ddpcifar.runs import queue  # noqa: E402
from tui.app import DashboardApp  # noqa: E402

SIZE = (132, 42)


def more_runs(runs: Path) -> None:
    """States the fixtures lack: queued (with its place), stopped, lost, remote; tags; TTA."""
    def status(name: str, **changes: object) -> None:
        path = runs / name / "status.json"
        data = json.loads(path.read_text())
        data.update(format=2, **changes)
        write_json(path, data)

    write_run(runs, "era_stopped", model="era_s9", epochs=12, done=5, state="stopped",
              ceiling=0.84, seed=6, error="stopped by SIGTERM at step 100 (epoch 5.00); resume "
                                          "continues from checkpoints/last.pt")
    write_run(runs, "airbench_tta", model="airbench", epochs=10, done=10, ceiling=0.93, seed=7)
    status("airbench_tta", top1_tta=0.9412)
    write_run(runs, "era_remote", model="era_s9", epochs=10, done=2, state="running", seed=8,
              updated=NOW - 3)
    status("era_remote", host="node7", pid=4242, pid_start=1)
    for k, name in enumerate(("queued_lr05", "queued_lr10")):
        run = runs / name
        run.mkdir()
        write_json(run / "status.json", {
            "format": 2, "name": name, "model": "era_s9", "engine": "torch", "state": "queued",
            "epoch": 0, "epochs": 24, "world_size": 2, "classes": [], "started": NOW,
            "updated": NOW, "pid": dead_pid(), "pid_start": 1, "host": socket.gethostname(),
            "best_top1": None, "last_top1": None, "error": None})
        write_json(run / "launch.json", {"queue": {"runs_dir": str(runs), "name": name,
                                                   "host": socket.gethostname()},
                                         "command": [], "attempts": []})
        queue.enqueue(runs, name)
    write_json(runs / "era_short" / "tags.json", ["baseline"])
    (runs / "era_live" / "run.log").write_text(
        "\n=== 2025-11-21 04:40:00 torchrun --standalone --nproc_per_node=2 -m ddpcifar.train "
        "specs/era_s9.json --set logging.run_name=era_live\n"
        "era_live: era_s9 (167,802 parameters), world size 2 on cpu (gloo), global batch 512 = "
        "2 x 256, 97 steps/epoch, 970 steps, amp torch.bfloat16, loader memory\n"
        + "".join(f"epoch {e}: 1,0{e}3 img/s, 47.{e} s\nepoch {e}/10: test loss "
                  f"{1.6 - e * 0.2:.4f}  top1 {50 + e * 8}.12%  top5 9{e}.40%\n"
                  for e in range(1, 4)))


def make_sweep(runs: Path) -> None:
    """A sweep directory with a journal study of eight trials (nothing trained)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from ddpcifar.sweep.config import SweepSpec
    from ddpcifar.sweep.storage import open_storage

    sweep = SweepSpec.model_validate({
        "name": "sweep_lr", "base": {"spec": "specs/airbench94.json"}, "trials": 8,
        "space": {"optimizer.lr": {"type": "float", "low": 4, "high": 24, "log": True},
                  "train.label_smoothing": {"type": "float", "low": 0, "high": 0.3}}})
    path = runs / "sweep_lr"
    path.mkdir()
    write_json(path / "sweep.json", {"sweep": sweep.resolved(), "source": "specs/x.json",
                                     "cwd": str(ROOT)})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="sweep_lr", direction="maximize",
                                storage=open_storage(None, path, 10))
    dists = {"optimizer.lr": FloatDistribution(4, 24, log=True),
             "train.label_smoothing": FloatDistribution(0, 0.3)}
    rows = [(6.1, 0.05, 0.861), (11.5, 0.2, 0.884), (18.0, 0.12, 0.872), (4.4, 0.28, None),
            (9.0, 0.18, 0.887), (14.2, 0.25, 0.879), (22.0, 0.02, None), (10.3, 0.15, 0.889)]
    for k, (lr, ls, value) in enumerate(rows):
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(create_trial(
            params={"optimizer.lr": lr, "train.label_smoothing": ls}, distributions=dists,
            value=value, state=state,
            intermediate_values={1: 0.7, 2: 0.8} if value is None else {1: 0.72, 2: 0.83},
            user_attrs={"runs": [str(path / f"trial-{k:04d}")], "test_top1": (value or 0) - 0.004
                        if value else None, "duration_s": 160.0 if value else 75.0}))
        write_run(path, f"trial-{k:04d}", model="airbench", epochs=3, done=3 if value else 2,
                  state="finished" if value else "pruned", ceiling=value or 0.8, seed=20 + k)


async def shoot(runs: Path, specs: Path, out: Path) -> list[Path]:
    from textual.widgets import Input

    from tui.screens.confirm import ConfirmScreen
    from tui.screens.new_run import NewRunScreen
    from tui.screens.sweep import SweepScreen

    written: list[Path] = []
    app = DashboardApp(runs, poll_interval=0.05, clock=lambda: NOW, specs_dir=specs, cwd=ROOT)

    def save(name: str) -> None:
        written.append(Path(app.save_screenshot(filename=f"{name}.svg", path=str(out))))

    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.runs) >= 10)
        await pilot.pause(0.5)
        save("runs")
        await pilot.press("5")
        table = screen.query_one("#runs")
        table.move_cursor(row=table.visible_names.index("era_live"))
        await pilot.pause(0.8)
        save("log")
        await pilot.press("k")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        save("stop")
        await pilot.press("n")
        await pilot.pause(0.2)
        await pilot.press("m")
        await pilot.pause(0.3)
        save("sort")
        await pilot.press("escape")
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        form.query_one("#field-lr", Input).value = "fast"
        form.query_one("#field-nproc", Input).value = "3"
        await pilot.pause(0.3)
        save("new_run")
        await pilot.press("escape")
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen), timeout=20)
        await wait_until(pilot, lambda: app.screen.view is not None, timeout=20)
        await pilot.pause(0.5)
        save("sweep")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "tui")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        make_fixture_runs(runs)
        more_runs(runs)
        make_sweep(runs)
        for path in asyncio.run(shoot(runs, ROOT / "specs", args.out)):
            print(path)
    _ = T0


if __name__ == "__main__":
    main()
