"""Where a sweep stands: its trials, the best one and how to run it, parameter importances, and
PNG plots (Optuna's matplotlib backend; plotly's image export would need a browser)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ddpcifar.errors import UserError
from ddpcifar.runs.reader import JsonCache
from ddpcifar.sweep.config import SweepSpec
from ddpcifar.sweep.storage import open_storage

SWEEP_RECORD = "sweep.json"
PLOTS = ("history", "importances", "parallel")


def load_sweep_dir(sweep_dir: Path) -> tuple[SweepSpec, dict[str, Any], optuna.Study]:
    """The sweep as recorded in its directory, and its study (read-only use)."""
    path = sweep_dir / SWEEP_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"not a sweep directory (no {SWEEP_RECORD}): {sweep_dir}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable ({err})") from None
    sweep = SweepSpec.model_validate(record["sweep"])
    storage = open_storage(sweep.storage, sweep_dir, sweep.heartbeat_s)
    try:
        study = optuna.load_study(study_name=sweep.name, storage=storage)
    except KeyError:
        raise UserError(f"sweep {sweep.name}: no study in its storage yet") from None
    return sweep, record, study


def trial_rows(sweep: SweepSpec, study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, parameters, objective, test metrics, epochs, time."""
    cache = JsonCache()
    rows = []
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs["retry_of"]: t.number for t in trials
                  if t.user_attrs.get("retry_of") is not None}
    for t in trials:
        runs = t.user_attrs.get("runs") or []
        epochs = 0
        for run in runs:
            status = cache.quiet(Path(run) / "status.json") or {}
            epochs += int(status.get("epoch") or 0)
        duration = t.user_attrs.get("duration_s")
        if duration is None and t.datetime_start is not None:
            end = t.datetime_complete.timestamp() if t.datetime_complete else time.time()
            duration = end - t.datetime_start.timestamp()
        rows.append({
            "number": t.number, "state": t.state.name.lower(), "params": t.params,
            "value": t.value, "test_top1": t.user_attrs.get("test_top1"),
            "test_top1_tta": t.user_attrs.get("test_top1_tta"), "epochs": epochs,
            "duration_s": None if duration is None else round(float(duration), 1),
            "runs": runs, "retry_of": t.user_attrs.get("retry_of"),
            "retried_as": retried_as.get(t.number), "reason": t.user_attrs.get("reason"),
        })
    return rows


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return study.best_trial


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances (Optuna's default fANOVA evaluator); {} when it cannot tell yet."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not complete[0].params:
        return {}
    import warnings

    with warnings.catch_warnings():  # "importances will be equal" when every value ties
        warnings.simplefilter("ignore")
        try:
            return {k: float(v) for k, v in
                    optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError):
            return {}


def best_command(sweep: SweepSpec, trial: FrozenTrial) -> str | None:
    """The best trial's command, from its first run's launch record."""
    runs = trial.user_attrs.get("runs") or []
    if not runs:
        return None
    try:
        return json.loads((Path(runs[0]) / "launch.json").read_text()).get("display")
    except (OSError, ValueError):
        return None


def write_plots(study: optuna.Study, out: Path) -> list[Path]:
    """history.png, importances.png and parallel.png (those with enough trials to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from ddpcifar.atomic import atomic_open

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    drawers = [("history", ovm.plot_optimization_history)]
    if len(complete) >= 2 and complete[0].params:
        drawers += [("importances", ovm.plot_param_importances),
                    ("parallel", ovm.plot_parallel_coordinate)]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    import warnings

    for name, draw in drawers:
        with warnings.catch_warnings():  # experimental API; ties in the importances
            warnings.simplefilter("ignore")
            try:
                ax = draw(study)
            except (RuntimeError, ValueError):
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(10, 6)
        fig.tight_layout()
        path = out / f"{name}.png"
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def summary_line(sweep: SweepSpec, study: optuna.Study) -> str:
    """One line: how far the sweep is and its best trial so far."""
    c = {s: 0 for s in ("complete", "pruned", "running", "waiting", "fail")}
    for t in study.get_trials(deepcopy=False):
        c[t.state.name.lower()] = c.get(t.state.name.lower(), 0) + 1
    done = c["complete"] + c["pruned"]
    text = (f"sweep {sweep.name}: {done} of {sweep.trials} done ({c['complete']} complete, "
            f"{c['pruned']} pruned), {c['running']} running, {c['waiting']} waiting, "
            f"{c['fail']} failed")
    best = best_trial(study)
    if best is not None and best.value is not None and not math.isnan(best.value):
        text += f"; best trial {best.number}: {sweep.objective.metric} {best.value:.4f}"
    return text
