"""Reading runs: one `RunInfo` per run directory, for the CLI, the dashboard and the sweeps.

Only small files are read here (status, summary, spec, launch record, tags; never
metrics.jsonl), each re-parsed only when its size or mtime changes, so polling a thousand runs
every second costs a few stat calls per run. Run directories of every format version load:
`load_summary` turns an older summary into the current schema.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddpcifar.runs import states
from ddpcifar.runs.procs import ProcessRef, pid_exists, this_host
from ddpcifar.runs.rundir import LAUNCH, LOG, SPEC, STATUS, SUMMARY, TAGS

# Format-1 status files record a bare pid (no start time, no host): such a run whose pid is
# gone is called lost only once it has not written for this long (the pid may be reused).
STALE_AFTER_S = 60.0
# A queued run that left the queue file but whose launcher has not recorded itself yet.
LAUNCH_GRACE_S = 15.0
SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class RunInfo:
    """What the run list shows for one run directory."""

    name: str  # relative to the runs directory: "era_s9", or "sweep_lr/trial-0003"
    path: Path
    model: str = "?"
    engine: str = "?"
    state: str = "unknown"  # a stored state, or lost | remote | unreadable
    stored_state: str = "unknown"
    epoch: int = 0
    epochs: int = 0
    world_size: int = 0
    best_top1: float | None = None
    last_top1: float | None = None
    top1_tta: float | None = None
    val_top1: float | None = None
    elapsed_s: float | None = None
    images_per_s: float | None = None
    classes: tuple[str, ...] = ()
    error: str | None = None  # the run's own failure message
    problem: str | None = None  # why this directory could not be read
    host: str | None = None
    pid: int | None = None
    queue_position: int | None = None  # 1-based place in its machine's queue
    tags: tuple[str, ...] = ()
    sweep: str | None = None  # the sweep directory holding this run (a trial)
    spec: dict[str, Any] | None = None
    launched: bool = False  # has a launch record (started through `runs` or a sweep)
    metrics: dict[str, float] = field(default_factory=dict)  # every number, for sorting

    @property
    def remote(self) -> bool:
        return self.state == states.REMOTE

    def spec_value(self, dotted: str) -> Any:
        """A spec field by path (`optimizer.lr`); None when absent."""
        node: Any = self.spec
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node


@dataclass
class ScanResult:
    """One poll of the runs directory: the runs and any reading problems (one line each)."""

    runs: list[RunInfo]
    problems: list[str] = field(default_factory=list)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class JsonCache:
    """Parsed JSON files, re-read only when (mtime, size) changes."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], Any]] = {}

    def read(self, path: Path, kind: type = dict) -> Any:
        """Parsed JSON of `path`, None when absent; raises ValueError when unreadable."""
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(path, None)
            return None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            if isinstance(cached[1], ValueError):
                raise cached[1]
            return cached[1]
        try:
            value: Any = json.loads(path.read_bytes())
            if not isinstance(value, kind):
                raise ValueError(f"not a JSON {'object' if kind is dict else kind.__name__}")
        except (OSError, ValueError) as err:
            value = ValueError(f"{path.parent.name}/{path.name}: unreadable ({short(err)})")
        self._cache[path] = (key, value)
        if isinstance(value, ValueError):
            raise value
        return value

    def quiet(self, path: Path, kind: type = dict) -> Any:
        """Like `read`, but None for an unreadable file too."""
        try:
            return self.read(path, kind)
        except ValueError:
            return None


class RunScanner:
    """Polls a runs directory, looking one level down into sweep directories."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        self.cache = JsonCache()

    def scan(self, now: float) -> ScanResult:
        """Read every run directory; `now` (unix time) decides elapsed time and staleness."""
        from ddpcifar.runs.queue import queue_positions  # the queue reads runs too

        result = ScanResult(runs=[])
        try:
            entries = sorted(p for p in self.runs_dir.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
        except FileNotFoundError:
            result.problems.append(f"runs directory not found: {self.runs_dir}")
            return result
        except OSError as err:
            result.problems.append(f"cannot list {self.runs_dir}: {short(err)}")
            return result
        positions = queue_positions(self.runs_dir)
        for path in entries:
            if not (path / STATUS).exists() and (path / SWEEP_FILE).exists():
                for trial in sorted(p for p in path.iterdir() if p.is_dir()):
                    self._add(result, trial, f"{path.name}/{trial.name}", now, positions,
                              sweep=path.name)
                continue
            self._add(result, path, path.name, now, positions)
        return result

    def _add(self, result: ScanResult, path: Path, name: str, now: float,
             positions: dict[str, int], sweep: str | None = None) -> None:
        info = self.read_run(path, name, now, positions.get(name), sweep=sweep)
        if info is None:
            return
        result.runs.append(info)
        if info.problem:
            result.problems.append(info.problem)

    def read_run(self, path: Path, name: str, now: float, queue_position: int | None = None,
                 sweep: str | None = None) -> RunInfo | None:
        try:
            status = self.cache.read(path / STATUS)
        except ValueError as err:
            return RunInfo(name=name, path=path, state="unreadable", problem=str(err))
        if status is None:
            return None  # not a run directory (yet): the writer creates status.json first
        summary = normalize_summary(self.cache.quiet(path / SUMMARY))
        return run_info(path, status, summary, now, name=name,
                        launch=self.cache.quiet(path / LAUNCH),
                        spec=self.cache.quiet(path / SPEC),
                        tags=self.cache.quiet(path / TAGS, list),
                        queue_position=queue_position, sweep=sweep)


def derive_state(status: dict[str, Any], launch: dict[str, Any] | None, now: float) -> str:
    """The state to show: the stored one, or lost / remote for a run nobody is driving."""
    state = str(status.get("state", "unknown"))
    if state not in (states.RUNNING, states.QUEUED):
        return state
    updated = _num(status.get("updated")) or 0.0
    host = status.get("host")
    if state == states.RUNNING and isinstance(host, str) and host != this_host():
        return states.REMOTE
    refs = [ProcessRef.from_json({"pid": status.get("pid"), "start": status.get("pid_start"),
                                  "host": host})]
    refs.append(ProcessRef.from_json(status.get("agent")))
    if launch:
        refs += [ProcessRef.from_json(launch.get(k)) for k in ("supervisor", "launcher")]
    refs = [r for r in refs if r is not None]
    if any(r.local and r.alive() for r in refs):
        return state
    if state == states.QUEUED:
        from ddpcifar.runs.queue import in_any_queue  # noqa: PLC0415

        if launch is None or in_any_queue(launch) or now - updated < LAUNCH_GRACE_S:
            return state
        return states.LOST
    if status.get("format", 1) < 2 or status.get("pid_start") is None:
        # A bare pid: the old rule (pid gone and quiet for a while).
        pid = status.get("pid")
        if isinstance(pid, int) and pid_exists(pid):
            return state
        return states.LOST if now - updated > STALE_AFTER_S else state
    return states.LOST


def run_info(path: Path, status: dict[str, Any], summary: dict[str, Any] | None, now: float, *,
             name: str | None = None, launch: dict[str, Any] | None = None,
             spec: dict[str, Any] | None = None, tags: list[Any] | None = None,
             queue_position: int | None = None, sweep: str | None = None) -> RunInfo:
    """Combine a run's files into a RunInfo as of unix time `now`."""
    summary = summary or {}
    state = derive_state(status, launch, now)
    started = _num(status.get("started"))
    updated = _num(status.get("updated"))
    elapsed: float | None = None
    if state == states.RUNNING and started is not None:
        elapsed = max(0.0, now - started)
    elif _num(summary.get("wall_time_s")) is not None:
        elapsed = _num(summary.get("wall_time_s"))
    elif started is not None and updated is not None:
        elapsed = max(0.0, updated - started)
    classes = status.get("classes") or summary.get("classes") or []
    best_eval = summary.get("best") if isinstance(summary.get("best"), dict) else {}
    final_eval = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    best = _num(status.get("best_top1"))
    if best is None:
        best = _num(best_eval.get("top1"))
    tta = _num(status.get("top1_tta"))
    if tta is None:
        tta = _num(final_eval.get("top1_tta"))
    val = _num(status.get("val_top1"))
    if val is None and isinstance(summary.get("val"), dict):
        val = _num(summary["val"].get("top1"))
    metrics = {k: v for k, v in (("best_top1", best), ("last_top1", _num(status.get("last_top1"))),
                                 ("top1_tta", tta), ("val_top1", val),
                                 ("images_per_s", _num(status.get("images_per_s"))),
                                 ("elapsed_s", elapsed)) if v is not None}
    for key in ("loss", "top1", "top3", "top5"):
        if _num(final_eval.get(key)) is not None:
            metrics[f"final_{key}"] = _num(final_eval[key])  # type: ignore[assignment]
    for key in ("wall_time_s", "train_time_s"):
        if _num(summary.get(key)) is not None:
            metrics[key] = _num(summary[key])  # type: ignore[assignment]
    timing = summary.get("timing") if isinstance(summary.get("timing"), dict) else {}
    if _num(timing.get("time_to_accuracy_s")) is not None:
        metrics["time_to_accuracy_s"] = _num(timing["time_to_accuracy_s"])  # type: ignore[assignment]
    return RunInfo(
        name=name or path.name,
        path=path,
        model=str(status.get("model", "?")),
        engine=str(status.get("engine", "?")),
        state=state,
        stored_state=str(status.get("state", "unknown")),
        epoch=int(_num(status.get("epoch")) or 0),
        epochs=int(_num(status.get("epochs")) or 0),
        world_size=int(_num(status.get("world_size")) or 0),
        best_top1=best,
        last_top1=_num(status.get("last_top1")),
        top1_tta=tta,
        val_top1=val,
        elapsed_s=elapsed,
        images_per_s=_num(status.get("images_per_s")),
        classes=tuple(str(c) for c in classes) if isinstance(classes, list) else (),
        error=status.get("error") if isinstance(status.get("error"), str) else None,
        host=status.get("host") if isinstance(status.get("host"), str) else None,
        pid=status.get("pid") if isinstance(status.get("pid"), int) else None,
        queue_position=queue_position if state == states.QUEUED else None,
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        sweep=sweep,
        spec=spec,
        launched=launch is not None,
        metrics=metrics,
    )


def normalize_summary(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """A summary.json of any format in the current schema (format 1 lacked some shared keys)."""
    if not isinstance(summary, dict):
        return None
    if summary.get("format", 1) >= 2:
        return summary
    out = dict(summary)
    final = out.get("final") if isinstance(out.get("final"), dict) else None
    out.setdefault("state", states.FINISHED)  # format 1 wrote a summary only when finishing
    if final is not None and isinstance(final.get("epoch"), int):
        out.setdefault("epochs_done", final["epoch"])
    if out.get("engine") == "numpy":
        train = out.get("train_time_s")
        out.setdefault("timing", {"train_s": train, "final_eval_s": None,
                                  "time_to_accuracy_s": train})
        val = out.pop("val_top1", None)
        out.setdefault("val", {"top1": val} if val is not None else None)
    else:
        out.setdefault("val", None)
        out.setdefault("checkpoint", "checkpoints/last.pt")
    out.setdefault("steps", None)
    return out


def load_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's summary.json in the current schema; None when it has none."""
    try:
        data = json.loads((Path(run_dir) / SUMMARY).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        from ddpcifar.errors import UserError

        raise UserError(f"{Path(run_dir) / SUMMARY}: unreadable ({short(err)})") from None
    return normalize_summary(data)


def read_run_dir(path: str | os.PathLike, now: float) -> RunInfo:
    """One run directory's RunInfo; a one-line UserError if it is not a run directory."""
    from ddpcifar.errors import UserError
    from ddpcifar.runs.queue import queue_positions

    path = Path(path)
    if not (path / STATUS).is_file():
        raise UserError(f"not a run directory (no {STATUS}): {path}")
    sweep = path.parent.name if (path.parent / SWEEP_FILE).exists() else None
    runs_dir = path.parent.parent if sweep else path.parent
    name = f"{sweep}/{path.name}" if sweep else path.name
    info = RunScanner(runs_dir).read_run(path, name, now, queue_positions(runs_dir).get(name),
                                         sweep=sweep)
    assert info is not None
    if info.problem:
        raise UserError(info.problem)
    return info


def log_tail(run_dir: str | os.PathLike, lines: int = 10) -> list[str]:
    """The last `lines` non-empty lines of the run's log (stdout and stderr of every rank)."""
    try:
        with open(Path(run_dir) / LOG, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    # Progress bars redraw with carriage returns: keep what the last redraw left.
    tail: deque[str] = deque(maxlen=lines)
    for line in text.splitlines():
        line = line.rsplit("\r", 1)[-1].rstrip()
        if line:
            tail.append(line)
    return list(tail)


def last_error(run_dir: str | os.PathLike) -> str:
    """The run log's last `error: ...` line (what the CLI prints), else its last line."""
    tail = log_tail(run_dir, 200)
    errors = [line for line in tail if line.startswith("error: ")]
    if errors:
        return errors[-1].removeprefix("error: ")
    return tail[-1] if tail else "no output"


def read_json_text(path: Path) -> tuple[str | None, str | None]:
    """(pretty JSON text, problem) for the details panel; (None, None) when the file is absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"{path.name}: {short(err)}"
    try:
        return compact_json(json.loads(raw)), None
    except ValueError as err:
        return raw.decode("utf-8", "replace"), f"{path.name}: not valid JSON ({short(err)})"


def compact_json(value: Any, indent: int = 0) -> str:
    """Pretty JSON, except that lists of plain values stay on one line (class lists, matrices)."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {compact_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) and v for v in value):
        if all(isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v)
               for v in value):  # a matrix: one row per line
            return "[\n" + ",\n".join(inner + json.dumps(v) for v in value) + f"\n{pad}]"
        items = [inner + compact_json(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def short(err: BaseException) -> str:
    """An exception as one short line (no paths repeated, no newlines)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]
