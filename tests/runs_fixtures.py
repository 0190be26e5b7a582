"""Helpers for tests that launch real runs through `python -m ddpcifar.runs` (tiny data,
memory loader, era_s9): a spec writer, the CLI as a subprocess, waiting for states, and a
clean-up that leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def tiny_spec(path: Path, data_dir: Path, *, name: str = "tiny", epochs: float = 2,
              runs_dir: str = "runs", **sections: Any) -> Path:
    """era_s9 on the session's 1,000-image set: 10 steps per epoch, a line per step."""
    spec: dict[str, Any] = {
        "data": {"dir": str(data_dir), "loader": "memory"},
        "model": {"name": "era_s9"},
        "augment": {"kind": "basic"},
        "train": {"epochs": epochs, "global_batch_size": 100, "log_every": 1},
        "eval": {"batch_size": 100, "max_samples": 4},
        "logging": {"runs_dir": runs_dir, "run_name": name, "tensorboard": False,
                    "progress": False},
    }
    for section, values in sections.items():
        spec.setdefault(section, {}).update(values)
    path.write_text(json.dumps(spec, indent=1))
    return path


def runs_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ddpcifar.runs", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"runs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def status(run: Path) -> dict[str, Any]:
    return json.loads((run / "status.json").read_text())


def wait_for(check, timeout: float = 180.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s")


def wait_state(run: Path, wanted: Iterable[str], timeout: float = 180.0) -> dict[str, Any]:
    wanted = set(wanted)

    def reached() -> dict[str, Any] | None:
        try:
            st = status(run)
        except (OSError, ValueError):
            return None
        return st if st.get("state") in wanted else None

    try:
        return wait_for(reached, timeout, f"{run.name} in {sorted(wanted)}")
    except AssertionError:
        log = (run / "run.log").read_text()[-3000:] if (run / "run.log").exists() else ""
        raise AssertionError(f"{run.name} never reached {sorted(wanted)}; status "
                             f"{status(run).get('state')}; log:\n{log}") from None


def train_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "train":
            steps.append(record["step"])
    return steps


def _launched_processes(runs_dir: Path) -> list[tuple[str, int]]:
    """(run:role, pid) of every supervisor and torchrun agent recorded and still alive."""
    from ddpcifar.runs.procs import ProcessRef

    alive = []
    for launch in runs_dir.glob("**/launch.json"):
        try:
            record = json.loads(launch.read_text())
        except (OSError, ValueError):
            continue
        for key in ("agent", "supervisor"):
            ref = ProcessRef.from_json(record.get(key))
            if ref is not None and ref.alive():
                alive.append((f"{launch.parent.name}:{key}", ref.pid))
    return alive


def kill_leftovers(runs_dir: Path, grace_s: float = 30.0) -> list[str]:
    """Give launched runs `grace_s` to exit on their own (a run that wrote "finished" is still
    tearing down), then SIGKILL the process group of any still alive; the names of those."""
    deadline = time.monotonic() + grace_s
    while _launched_processes(runs_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for name, pid in _launched_processes(runs_dir):
        try:
            os.killpg(pid, signal.SIGKILL)
            killed.append(name)
        except (ProcessLookupError, PermissionError):
            pass
    return killed
