"""Reading the run list: one `RunInfo` per directory under the runs dir (docs/run_directory.md).

Only `status.json` and `summary.json` are read here (never `metrics.jsonl`), and each is
re-parsed only when its size or mtime changes, so polling hundreds of runs every second stays
cheap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A "running" run whose process is gone and that has not written status.json for this long
# was killed without a chance to say so.
STALE_AFTER_S = 60.0


@dataclass(frozen=True)
class RunInfo:
    """What the run list shows for one run directory."""

    name: str
    path: Path
    model: str = "?"
    state: str = "unknown"  # running | finished | failed | stale | unreadable
    epoch: int = 0
    epochs: int = 0
    best_top1: float | None = None
    last_top1: float | None = None
    elapsed_s: float | None = None
    images_per_s: float | None = None
    classes: tuple[str, ...] = ()
    error: str | None = None  # the run's own failure message
    problem: str | None = None  # why this directory could not be read


@dataclass
class ScanResult:
    """One poll of the runs directory: the runs and any reading problems (one line each)."""

    runs: list[RunInfo]
    problems: list[str] = field(default_factory=list)


def pid_alive(pid: Any) -> bool:
    """True if a process with this id exists on this host (signal 0 probes without sending)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class RunScanner:
    """Polls a runs directory; caches parsed JSON by (mtime, size) so unchanged runs cost a stat."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        self._cache: dict[Path, tuple[tuple[int, int], Any]] = {}

    def _read_json(self, path: Path) -> Any:
        """Parsed JSON of `path`, None when absent; raises ValueError when unreadable."""
        try:
            st = path.stat()
        except FileNotFoundError:
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
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            value = ValueError(f"{path.parent.name}/{path.name}: unreadable ({_short(err)})")
        self._cache[path] = (key, value)
        if isinstance(value, ValueError):
            raise value
        return value

    def scan(self, now: float) -> ScanResult:
        """Read every run directory; `now` (unix time) decides elapsed time and staleness."""
        result = ScanResult(runs=[])
        try:
            entries = sorted(p for p in self.runs_dir.iterdir() if p.is_dir())
        except FileNotFoundError:
            result.problems.append(f"runs directory not found: {self.runs_dir}")
            return result
        except OSError as err:
            result.problems.append(f"cannot list {self.runs_dir}: {_short(err)}")
            return result
        for path in entries:
            info = self._read_run(path, now)
            if info is None:
                continue
            result.runs.append(info)
            if info.problem:
                result.problems.append(info.problem)
        return result

    def _read_run(self, path: Path, now: float) -> RunInfo | None:
        try:
            status = self._read_json(path / "status.json")
        except ValueError as err:
            return RunInfo(name=path.name, path=path, state="unreadable", problem=str(err))
        if status is None:
            return None  # not a run directory (yet): the writer creates status.json first
        try:
            summary = self._read_json(path / "summary.json") or {}
        except ValueError:
            summary = {}  # the run list still works from status.json alone
        return run_info(path, status, summary, now)


def run_info(path: Path, status: dict[str, Any], summary: dict[str, Any], now: float) -> RunInfo:
    """Combine status.json and summary.json into a RunInfo as of unix time `now`."""
    state = str(status.get("state", "unknown"))
    started = _num(status.get("started"))
    updated = _num(status.get("updated"))
    if (state == "running" and not pid_alive(status.get("pid"))
            and updated is not None and now - updated > STALE_AFTER_S):
        state = "stale"
    elapsed: float | None = None
    if state == "running" and started is not None:
        elapsed = max(0.0, now - started)
    elif _num(summary.get("wall_time_s")) is not None:
        elapsed = _num(summary.get("wall_time_s"))
    elif started is not None and updated is not None:
        elapsed = max(0.0, updated - started)
    classes = status.get("classes") or summary.get("classes") or []
    best = _num(status.get("best_top1"))
    if best is None and isinstance(summary.get("best"), dict):
        best = _num(summary["best"].get("top1"))
    return RunInfo(
        name=path.name,
        path=path,
        model=str(status.get("model", "?")),
        state=state,
        epoch=int(_num(status.get("epoch")) or 0),
        epochs=int(_num(status.get("epochs")) or 0),
        best_top1=best,
        last_top1=_num(status.get("last_top1")),
        elapsed_s=elapsed,
        images_per_s=_num(status.get("images_per_s")),
        classes=tuple(str(c) for c in classes) if isinstance(classes, list) else (),
        error=status.get("error") if isinstance(status.get("error"), str) else None,
    )


def read_json_text(path: Path) -> tuple[str | None, str | None]:
    """(pretty JSON text, problem) for the details panel; (None, None) when the file is absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"{path.name}: {_short(err)}"
    try:
        return compact_json(json.loads(raw)), None
    except ValueError as err:
        return raw.decode("utf-8", "replace"), f"{path.name}: not valid JSON ({_short(err)})"


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


def _short(err: BaseException) -> str:
    """An exception as one short line (no paths repeated, no newlines)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]
