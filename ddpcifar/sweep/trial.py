"""One trial: its runs (one per replicate seed), each the ordinary torchrun command on the
trial's written spec, followed evaluation by evaluation for the pruner, then scored.

A trial's runs are ordinary run directories inside the sweep directory (`trial-0007`, or
`trial-0007-seed1` with several seeds), launched by the worker itself, not detached: torchrun
runs in its own process group with a parent-death signal (SIGTERM), so a killed worker's
trial stops too, and it holds a slot of the machine's queue (ddpcifar.runs.queue) while it runs.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ddpcifar.runs import detached, queue, states
from ddpcifar.runs.launch import check_spec, prepare, read_launch, train_command, write_launch
from ddpcifar.runs.procs import ProcessRef
from ddpcifar.runs.reader import last_error, load_summary
from ddpcifar.runs.ending import end_run
from ddpcifar.runs.rundir import LOG, METRICS, write_tags
from ddpcifar.spec import apply_overrides
from ddpcifar.sweep.config import SweepSpec

STOP_GRACE_S = 120.0  # after SIGTERM, how long a trial's run may take to checkpoint and stop
_PR_SET_PDEATHSIG = 1


def run_name(number: int, seed_index: int, seeds: int) -> str:
    return f"trial-{number:04d}" + (f"-seed{seed_index}" if seeds > 1 else "")


def trial_overrides(sweep: SweepSpec, params: dict[str, Any], sweep_dir: Path, name: str,
                    seed: int) -> list[str]:
    """What a trial's spec changes in the base spec (after the base's own overrides)."""
    return [*(f"{path}={json.dumps(value)}" for path, value in params.items()),
            f"train.seed={seed}", f"logging.runs_dir={sweep_dir}", f"logging.run_name={name}"]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the worker that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Outcome:
    """How a trial ended: "complete", "pruned" or "fail", with its score and the details."""

    state: str
    value: float | None = None
    reason: str = ""
    runs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)  # stored as the trial's user attrs
    epochs_run: int = 0
    retry: bool = True  # False: stopped on purpose from outside, not to be run again


class TrialRunner:
    """Runs one trial's seeds in turn; `report(step, value) -> prune?` feeds the pruner."""

    def __init__(self, sweep: SweepSpec, *, sweep_dir: Path, base: dict[str, Any], cwd: Path,
                 number: int, params: dict[str, Any],
                 report: Callable[[int, float], bool], stopping: Callable[[], bool],
                 say: Callable[[str], None], worker: ProcessRef) -> None:
        self.sweep, self.sweep_dir, self.base, self.cwd = sweep, sweep_dir, base, cwd
        self.number, self.params = number, params
        self.report, self.stopping, self.say = report, stopping, say
        self.worker = worker
        self.proc: subprocess.Popen | None = None
        self.dirs: list[Path] = []

    def prepare_dirs(self) -> list[Path]:
        """Write every seed's spec (validated as the ranks will) and run directory."""
        dirs = self.dirs
        seeds = self.sweep.seeds
        for k, seed in enumerate(seeds):
            name = run_name(self.number, k, len(seeds))
            overrides = trial_overrides(self.sweep, self.params, self.sweep_dir, name, seed)
            data = apply_overrides(self.base, overrides)
            spec_file = self.sweep_dir / f".{name}.spec.json"
            spec_file.write_text(json.dumps(data))
            try:
                spec = check_spec(spec_file, [], self.sweep.ranks)
            finally:
                spec_file.unlink(missing_ok=True)
            run_dir = (self.cwd / spec.run_dir).resolve()
            env = {"OMP_NUM_THREADS": str(self.sweep.threads)} if self.sweep.threads else None
            prepare(spec, train_command(run_dir / "spec.json", nproc=self.sweep.ranks),
                    cwd=self.cwd, nproc=self.sweep.ranks, env=env,
                    tags=[f"sweep:{self.sweep.name}", f"trial:{self.number}"], action="trial")
            dirs.append(run_dir)
        return dirs

    def failed(self, reason: str) -> Outcome:
        return Outcome("fail", reason=reason, runs=[str(d) for d in self.dirs])

    def run_prepared(self) -> Outcome:
        dirs = self.dirs
        outcome = Outcome("complete", runs=[str(d) for d in dirs])
        values, tests = [], []
        epochs = math.ceil(float(self.base["train"]["epochs"]))
        for k, run_dir in enumerate(dirs):
            ended = self._run_one(run_dir, step_offset=k * epochs, outcome=outcome)
            if ended is not None:
                for later in dirs[k + 1:]:  # seeds that will not run: say so
                    end_run(later, states.STOPPED,
                            error=f"not run: the trial was {ended.state}")
                return ended
            summary = load_summary(run_dir) or {}
            value = objective_value(summary, self.sweep.objective.metric)
            if value is None:
                outcome.state, outcome.reason = "fail", (
                    f"{run_dir.name}: no {self.sweep.objective.metric} in its summary")
                return outcome
            values.append(value)
            tests.append(test_metrics(summary))
        outcome.value = sum(values) / len(values)
        outcome.attrs.update(values=values, tests=tests, runs=outcome.runs,
                             **mean_tests(tests))
        return outcome

    def _run_one(self, run_dir: Path, *, step_offset: int, outcome: Outcome) -> Outcome | None:
        """Train one seed; None when it finished, else the trial's end (pruned, failed)."""
        root, name = run_dir.parent.parent, f"{run_dir.parent.name}/{run_dir.name}"
        slot = queue.wait_slot(root, name, cancelled=self.stopping)
        if slot is None:
            end_run(run_dir, states.STOPPED,
                    error="not started: the worker stopped")
            return Outcome("fail", reason="the worker stopped before the trial started",
                           runs=outcome.runs)
        record = read_launch(run_dir) or {}
        env = {**detached.repo_env(), **record.get("env", {})}
        try:
            with open(run_dir / LOG, "ab") as log:
                self.proc = subprocess.Popen(record["command"], cwd=record["cwd"], env=env,
                                             stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, process_group=0,
                                             pass_fds=(slot.fd,), preexec_fn=_die_with_parent)
        finally:
            slot.release()  # torchrun holds the slot now
        record.update(supervisor=self.worker.to_json(),
                      agent=ProcessRef.of(self.proc.pid).to_json())
        record["attempts"][-1]["started"] = time.time()
        write_launch(run_dir, record)
        pruned_at = self._follow(run_dir, step_offset, outcome)
        code = self.proc.wait()
        record = read_launch(run_dir) or record
        record["attempts"][-1].update(ended=time.time(), exit_code=code)
        record["supervisor"] = None
        write_launch(run_dir, record)
        if pruned_at is not None:
            end_run(run_dir, states.PRUNED,
                    error=f"pruned by the sweep after epoch {pruned_at} "
                          f"({self.sweep.pruner.kind} pruner)")
            return Outcome("pruned", reason=f"after epoch {pruned_at}", runs=outcome.runs,
                           epochs_run=pruned_at)
        state = _stored_state(run_dir)
        if state == states.FINISHED:
            return None
        if self.stopping():
            return Outcome("fail", reason="the worker was stopped", runs=outcome.runs)
        if state == states.STOPPED:
            return Outcome("fail", reason="stopped from outside (runs stop, the dashboard); "
                           "not retried", runs=outcome.runs, retry=False)
        reason = (_status(run_dir).get("error") if state in (states.FAILED, states.STOPPED)
                  else None) or f"exited with status {code}: {last_error(run_dir)}"
        if state in (states.RUNNING, states.QUEUED):
            end_run(run_dir, states.FAILED,
                    error=reason[:300])
        return Outcome("fail", reason=reason, runs=outcome.runs)

    def _follow(self, run_dir: Path, step_offset: int, outcome: Outcome) -> int | None:
        """Report each evaluation until the run ends; the epoch it was pruned after, if so."""
        assert self.proc is not None
        metric = self.sweep.objective.report_metric
        offset, partial = 0, b""
        stop_sent: float | None = None
        pruned_at = None
        while True:
            done = self.proc.poll() is not None
            try:
                with open(run_dir / METRICS, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            lines, _, partial = (partial + chunk).rpartition(b"\n")
            for raw in lines.split(b"\n") if lines else []:
                record = _json(raw)
                if record is None or record.get("kind") != "eval" or pruned_at is not None:
                    continue
                value = eval_value(record.get("values", {}), metric)
                epoch = int(record.get("epoch", 0))
                outcome.epochs_run = epoch
                if value is not None and self.report(step_offset + epoch, value):
                    pruned_at = epoch
                    self._signal(signal.SIGTERM)
                    stop_sent = time.monotonic()
            if self.stopping() and stop_sent is None:
                self._signal(signal.SIGTERM)
                stop_sent = time.monotonic()
            if stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_S:
                self._signal(signal.SIGKILL, group=True)
            if done:
                return pruned_at
            time.sleep(0.25)

    def _signal(self, sig: int, group: bool = False) -> None:
        assert self.proc is not None
        try:
            (os.killpg if group else os.kill)(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _stored_state(run_dir: Path) -> str | None:
    return _status(run_dir).get("state")


def eval_value(values: dict[str, Any], metric: str) -> float | None:
    """An eval line's value of `metric` (val_* or a test metric)."""
    value = values.get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def objective_value(summary: dict[str, Any], metric: str) -> float | None:
    """The final evaluation's `metric` from summary.json (validation or test)."""
    if metric.startswith("val_"):
        section = summary.get("val") or {}
        value = section.get(metric.removeprefix("val_"))
    else:
        value = (summary.get("final") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def test_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The test metrics reported beside the objective (which the sweep never chooses by)."""
    final = summary.get("final") or {}
    return {f"test_{k}": float(final[k]) for k in ("top1", "top5", "loss", "top1_tta")
            if isinstance(final.get(k), (int, float))}


def mean_tests(tests: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(t) for t in tests)) if tests else set()
    return {k: sum(t[k] for t in tests) / len(tests) for k in sorted(keys)}


def label_dead_runs(runs: list[str], retry_number: int | None) -> None:
    """A dead worker's trial runs are kept and labelled, never reused."""
    for path in runs:
        run_dir = Path(path)
        if not (run_dir / "status.json").exists():
            continue
        note = (f"its worker died; the trial was retried as trial {retry_number}"
                if retry_number is not None else "its worker died; not retried")
        status = _status(run_dir)
        if status.get("state") in (states.RUNNING, states.QUEUED, states.STOPPED):
            end_run(run_dir, states.FAILED,
                    error=note)
        tags = json.loads((run_dir / "tags.json").read_text()) if (run_dir / "tags.json").exists() \
            else []
        write_tags(run_dir, [*tags, "worker-died"])

