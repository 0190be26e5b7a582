"""A sweep worker: ask for a trial, write its specs, run them, report, tell; until the study
has `trials` complete and pruned trials. Several workers (processes, machines) share a study.

Everything that decides whether a new trial is needed happens under the study's lock
(ddpcifar.sweep.storage.sweep_lock): failing the trials of dead workers (and queueing their
parameters again), counting, and asking. So no worker starts a trial too many, and no trial is
asked for twice. Optuna runs in this process only, never inside a training rank.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from ddpcifar.data.orders import derive_seed
from ddpcifar.errors import UserError
from ddpcifar.runs.procs import ProcessRef
from ddpcifar.sweep import storage as st
from ddpcifar.sweep.config import ChoiceParam, FloatParam, IntParam, SweepSpec
from ddpcifar.sweep.trial import TrialRunner, label_dead_runs

optuna.logging.set_verbosity(optuna.logging.WARNING)
WAIT_S = 1.0  # between looks at a study whose last trials other workers are running


def sampler(sweep: SweepSpec, number: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler that asks for trial `number`, seeded by (sampler.seed, number).

    A seeded sampler made once per process would repeat its random draws in every worker and
    in every run that continues the study (each would start its sequence over). Samplers read
    what they need from the study's trials, so a fresh one per trial, seeded by the trial's
    number, asks for the same parameters for the same history whichever worker asks.
    """
    s = sweep.sampler
    seed = derive_seed(s.seed, number) % 2**32
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.kind == "grid":
        grid = {p: v.choices for p, v in sweep.space.items() if isinstance(v, ChoiceParam)}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials)


def pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    p = sweep.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials,
                                           n_warmup_steps=p.warmup_epochs)
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def suggest(trial: Trial, sweep: SweepSpec) -> dict[str, Any]:
    """The trial's value of every parameter of the space (spec path -> value)."""
    params: dict[str, Any] = {}
    for path, p in sweep.space.items():
        if isinstance(p, FloatParam):
            params[path] = trial.suggest_float(path, p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            params[path] = trial.suggest_int(path, p.low, p.high, log=p.log, step=p.step)
        else:
            params[path] = trial.suggest_categorical(path, p.choices)
    return params


def open_study(sweep: SweepSpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    direction = "maximize" if sweep.objective.maximize else "minimize"
    try:
        return optuna.create_study(study_name=sweep.name, storage=storage, load_if_exists=True,
                                   direction=direction, sampler=sampler(sweep),
                                   pruner=pruner(sweep))
    except ValueError as err:  # e.g. an existing study with the other direction
        raise UserError(f"study {sweep.name!r}: {err}") from None


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name.lower()] += 1
    return out


class Worker:
    """One worker process: `run()` returns how many trials it ran."""

    def __init__(self, sweep: SweepSpec, sweep_dir: Path, base: dict[str, Any], cwd: Path,
                 say: Callable[[str], None] = print) -> None:
        self.sweep, self.sweep_dir, self.base, self.cwd = sweep, sweep_dir, base, cwd
        self.say = say
        # The storage itself (Optuna wraps a database storage in a cache inside the study).
        self.storage = st.open_storage(sweep.storage, sweep_dir, sweep.heartbeat_s)
        self.study = open_study(sweep, self.storage)
        self.me = ProcessRef.me()
        self.stop_signals = 0
        self.ran = 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signals += 1
        if self.stop_signals == 1:
            self.say(f"{signal.Signals(signum).name}: stopping the current trial cleanly "
                     "(again to stop at once)")
        else:
            raise KeyboardInterrupt

    def stopping(self) -> bool:
        return self.stop_signals > 0

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        record = self.sweep_dir / "workers" / f"{st.worker_name()}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        forget_dead_workers(record.parent)
        record.write_text(json.dumps({**self.me.to_json(), "started": time.time()}))
        try:
            while not self.stopping():
                asked = time.time()
                trial = self._next_trial()
                if trial is None:
                    break
                self._run_trial(trial, asked)
        finally:
            record.unlink(missing_ok=True)
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.ran

    def _next_trial(self) -> Trial | None:
        """A new (or retried) trial, or None when the study needs no more trials."""
        while not self.stopping():
            with self._lock():
                for dead in st.stale_trials(self.study, self.storage, self.sweep.heartbeat_s):
                    self._retry(dead, "its worker died")
                c = counts(self.study)
                failed_out = c["fail"] - self._retried_count()
                if failed_out > self.sweep.trials * (self.sweep.retries + 1):
                    raise UserError(f"sweep {self.sweep.name}: {c['fail']} trials failed; "
                                    "stopping (see the trials' run.log)")
                if c["waiting"] or c["complete"] + c["pruned"] + c["running"] < self.sweep.trials:
                    self.study.sampler = sampler(self.sweep, sum(c.values()))
                    return self.study.ask()
                if not c["running"]:
                    return None
            time.sleep(WAIT_S)  # other workers' trials may still fail and need retrying
        return None

    def _lock(self):  # -> a context manager
        journal = None if st.is_url(self.sweep.storage) else self.sweep.storage
        return st.sweep_lock(self.storage, self.sweep_dir, journal)

    def _retried_count(self) -> int:
        """Failed trials whose parameters were queued again (a finished trial cannot be
        changed: its retry says `retry_of`)."""
        return len({t.user_attrs.get("retry_of") for t in self.study.get_trials(deepcopy=False)}
                   - {None})

    def _retry(self, failed: FrozenTrial, why: str) -> int | None:
        """Queue a failed trial's parameters again (up to `retries` times); its number."""
        attempt = int(failed.user_attrs.get("attempt", 1))
        runs = failed.user_attrs.get("runs") or []
        if attempt > self.sweep.retries:
            self.say(f"trial {failed.number}: failed ({why}); not retried: {attempt} attempts")
            label_dead_runs(runs, None) if why == "its worker died" else None
            return None
        self.study.enqueue_trial(failed.params, user_attrs={"attempt": attempt + 1,
                                                            "retry_of": failed.number},
                                 skip_if_exists=False)
        retry = max(t.number for t in self.study.get_trials(deepcopy=False))
        if why == "its worker died":
            label_dead_runs(runs, retry)
        self.say(f"trial {failed.number}: failed ({why}); retried as trial {retry}")
        return retry

    def _run_trial(self, trial: Trial, asked: float) -> None:
        params = suggest(trial, self.sweep)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items()) or "base spec"
        t0, cpu0 = time.monotonic(), time.process_time()

        def report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        runner = TrialRunner(self.sweep, sweep_dir=self.sweep_dir, base=self.base, cwd=self.cwd,
                             number=trial.number, params=params, report=report,
                             stopping=self.stopping, say=self.say, worker=self.me)
        with st.Heartbeat(self.storage, trial._trial_id, self.sweep.heartbeat_s):  # noqa: SLF001
            try:
                runs = [str(d) for d in runner.prepare_dirs()]
                trial.set_user_attr("runs", runs)
                trial.set_user_attr("worker", st.worker_name())
                self.say(f"trial {trial.number}: started ({shown}) -> "
                         f"{', '.join(Path(r).name for r in runs)}")
                outcome = runner.run_prepared()
            except UserError as err:
                outcome = runner.failed(str(err))
        for key, value in outcome.attrs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("epochs_run", outcome.epochs_run)
        trial.set_user_attr("duration_s", round(time.monotonic() - t0, 3))
        trial.set_user_attr("machinery", machinery(asked, outcome.runs,
                                                   time.process_time() - cpu0))
        self.ran += 1
        took = f"{time.monotonic() - t0:.0f} s"
        if outcome.state == "complete":
            self.study.tell(trial, outcome.value)
            test = outcome.attrs.get("test_top1")
            self.say(f"trial {trial.number}: complete, {self.sweep.objective.metric} "
                     f"{outcome.value:.4f}" + (f" (test top-1 {test:.4f})" if test else "")
                     + f" in {took}")
        elif outcome.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
            self.say(f"trial {trial.number}: pruned {outcome.reason} in {took}")
        else:
            trial.set_user_attr("reason", outcome.reason[:300])
            self.study.tell(trial, state=TrialState.FAIL)
            self.say(f"trial {trial.number}: failed: {outcome.reason}")
            if outcome.retry:  # a worker stopped mid-trial: interrupted, not broken
                why = "the worker was stopped" if self.stopping() else outcome.reason
                with self._lock():
                    self._retry(self.storage.get_trial(trial._trial_id), why)  # noqa: SLF001


def machinery(asked: float, runs: list[str], worker_cpu_s: float) -> dict[str, float | None]:
    """What the sweep itself cost a trial, apart from what any run pays (torchrun, data):
    from asking to launching the first run, from the last run's exit to now (just before
    telling), and the worker's CPU time over the whole trial (following metrics, storage)."""
    attempts = []
    for run in runs:
        try:
            attempts.append(json.loads((Path(run) / "launch.json").read_text())["attempts"][-1])
        except (OSError, ValueError, KeyError, IndexError):
            pass
    started = [a["started"] for a in attempts if "started" in a]
    ended = [a["ended"] for a in attempts if "ended" in a]
    return {"ask_to_launch_s": round(min(started) - asked, 4) if started else None,
            "exit_to_tell_s": round(time.time() - max(ended), 4) if ended else None,
            "worker_cpu_s": round(worker_cpu_s, 3)}


def live_workers(workers_dir: Path) -> list[ProcessRef]:
    """The workers that recorded themselves and still live (remote ones: taken on trust)."""
    alive = []
    for path in sorted(workers_dir.glob("*.json")):
        try:
            ref = ProcessRef.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if ref is not None and (not ref.local or ref.alive()):
            alive.append(ref)
    return alive


def forget_dead_workers(workers_dir: Path) -> None:
    """Remove the records of this host's workers that were killed without cleaning up."""
    for path in workers_dir.glob("*.json"):
        try:
            ref = ProcessRef.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if ref is not None and ref.local and not ref.alive():
            path.unlink(missing_ok=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
