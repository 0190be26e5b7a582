"""What the sweep view shows, read in a thread worker: the trials, the best one, parameter
importances and the live workers of one sweep directory (docs/sweeps.md), through the same
functions as `python -m ddpcifar.sweep show`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddpcifar.errors import UserError

SWEEP_FILE = "sweep.json"


def sweep_dirs(runs_dir: Path) -> list[Path]:
    """The sweep directories of a runs directory."""
    try:
        return sorted(p for p in runs_dir.iterdir() if (p / SWEEP_FILE).is_file())
    except OSError:
        return []


@dataclass
class SweepView:
    """One read of a sweep."""

    name: str
    path: Path
    metric: str = ""
    maximize: bool = True
    space: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: int | None = None
    importances: dict[str, float] = field(default_factory=dict)
    workers: list[int] = field(default_factory=list)  # live local worker pids
    summary: str = ""
    error: str | None = None


def read_sweep(path: Path) -> SweepView:
    """Everything the view shows (Optuna is imported here, in the worker thread)."""
    view = SweepView(name=path.name, path=path)
    try:
        from ddpcifar.sweep.show import (best_trial, importances, load_sweep_dir, summary_line,
                                         trial_rows)
        from ddpcifar.sweep.worker import live_workers

        sweep, _, study = load_sweep_dir(path)
        view.metric, view.maximize = sweep.objective.metric, sweep.objective.maximize
        view.space = list(sweep.space)
        view.rows = trial_rows(sweep, study)
        best = best_trial(study)
        view.best = best.number if best is not None else None
        view.importances = importances(study)
        view.workers = [w.pid for w in live_workers(path / "workers") if w.local]
        view.summary = summary_line(sweep, study)
    except UserError as err:
        view.error = str(err)
    except Exception as err:  # noqa: BLE001 - a damaged storage must not kill the dashboard
        view.error = f"{type(err).__name__}: {err}"[:200]
    return view
