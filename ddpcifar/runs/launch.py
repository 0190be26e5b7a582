"""Launching runs: the ordinary training command, a run directory that waits in the queue, and
the detached supervisor that runs the command when the run's turn comes.

A launched run is the command a user would type,

    torchrun --standalone --nproc_per_node=N -m ddpcifar.train SPEC [--set ...] [--resume]

recorded in `launch.json` with its working directory, and run by a supervisor process
(`python -m ddpcifar.runs _supervise RUN`, ddpcifar.runs.supervise) in a session of its own,
so it keeps running when the dashboard quits or the SSH connection drops. Its output, every
rank's stdout and stderr, goes to `run.log`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ddpcifar.atomic import write_json
from ddpcifar.errors import UserError
from ddpcifar.runs import detached, queue, states
from ddpcifar.runs.locks import SharedLock
from ddpcifar.runs.procs import ProcessRef, this_host
from ddpcifar.runs.rundir import LAUNCH, LOG, SPEC, STATUS, new_status, write_tags
from ddpcifar.spec import RunSpec, load_spec

LAUNCH_FORMAT = 1
# Set for every launched command, as the launch helpers do: a rendezvous store per attempt,
# served by rank 0's worker. Restarts no longer depend on it (the trainer's store keys are per
# attempt, so plain torchrun restarts as reliably); what it changes, and its side effect on
# several launches starting at once on one host, is in docs/resilience.md.
LAUNCH_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
STOP_TIMEOUT_S = 120.0


def torchrun() -> str:
    """The torchrun beside this interpreter (a virtual environment's), else the one on PATH."""
    beside = Path(sys.executable).parent / "torchrun"
    return str(beside) if beside.exists() else "torchrun"


def train_command(spec: str | os.PathLike, overrides: Sequence[str] = (), *, nproc: int = 1,
                  resume: bool = False) -> list[str]:
    """The ordinary training command for `spec` with `overrides` on `nproc` local ranks."""
    cmd = [torchrun(), "--standalone", f"--nproc_per_node={nproc}", "-m", "ddpcifar.train",
           str(spec)]
    for text in overrides:
        cmd += ["--set", text]
    if resume:
        cmd.append("--resume")
    return cmd


def display(command: Sequence[str]) -> str:
    """The command as a user would type it (torchrun by name, shell-quoted)."""
    words = list(command)
    if words and Path(words[0]).name == "torchrun":
        words[0] = "torchrun"
    return shlex.join(words)


@dataclass(frozen=True)
class Launched:
    """What `launch` did, for the one line the CLI and the dashboard print."""

    run_dir: Path
    name: str
    command: list[str]
    position: int  # in the machine's queue when submitted (1: next to start)
    free_slot: bool = True  # a slot was free when it was submitted

    def line(self, verb: str = "launched") -> str:
        where = ("starting now" if self.position == 1 and self.free_slot
                 else f"queued at position {self.position}")
        return f"{verb} {self.name} ({where}): {display(self.command)}"


def check_spec(spec_path: str | os.PathLike, overrides: Sequence[str], nproc: int) -> RunSpec:
    """The spec as the ranks will load it (same validation, for `nproc` ranks), or a UserError."""
    if not 1 <= nproc <= 1024:
        raise UserError(f"--nproc must be between 1 and 1024: {nproc}")
    spec = load_spec(spec_path, overrides, world_size=nproc)
    if spec.model.engine == "numpy" and nproc != 1:
        raise UserError(f"model {spec.model.name!r} runs on the NumPy engine in one process "
                        f"(allowed: --nproc 1, got {nproc})")
    return spec


def runs_root(run_dir: Path) -> tuple[Path, str]:
    """(the runs directory that queues this run, the run's name in it): a sweep's trial is
    queued in the runs directory above its sweep."""
    from ddpcifar.runs.reader import SWEEP_FILE

    if (run_dir.parent / SWEEP_FILE).exists():
        return run_dir.parent.parent, f"{run_dir.parent.name}/{run_dir.name}"
    return run_dir.parent, run_dir.name


def prepare(spec: RunSpec, command: Sequence[str], *, cwd: Path, nproc: int,
            env: dict[str, str] | None = None, tags: Sequence[str] = (),
            action: str = "launch") -> Path:
    """Create the run directory of a new run, queued: spec.json, status.json, launch.json."""
    run_dir = (cwd / spec.run_dir).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"run directory {run_dir} already exists; continue it with "
                        f"`python -m ddpcifar.runs resume {run_dir}` or pick another name "
                        "with --name NAME")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / SPEC, spec.resolved())
    if tags:
        write_tags(run_dir, tags)
    status = new_status(name=spec.logging.run_name, model=spec.model.name,
                        engine=spec.model.engine, epochs=int(-(-spec.train.epochs // 1)),
                        world_size=nproc, classes=[], state=states.QUEUED,
                        process=ProcessRef.me())
    write_json(run_dir / STATUS, status)
    root, name = runs_root(run_dir)
    record = {"format": LAUNCH_FORMAT, "name": name, "command": list(command),
              "display": display(command), "cwd": str(cwd), "env": {**LAUNCH_ENV, **(env or {})},
              "nproc": nproc, "host": this_host(), "created": time.time(),
              "launcher": ProcessRef.me().to_json(), "supervisor": None, "agent": None,
              "stop_requested": None,
              "queue": {"runs_dir": str(root), "name": name, "host": this_host()},
              "attempts": [{"action": action, "queued": time.time()}]}
    write_json(run_dir / LAUNCH, record)
    return run_dir


def submit(run_dir: Path, name: str | None = None, command: Sequence[str] = ()) -> Launched:
    """Put a prepared run in its machine's queue and make sure the queue is served."""
    root, key = runs_root(run_dir)
    free = len(queue.busy_slots(root)) < queue.read_queue(root).slots
    position = queue.enqueue(root, key)
    queue.ensure_server(root)
    return Launched(run_dir, name or key, list(command), position, free)


def launch(spec_path: str | os.PathLike, overrides: Sequence[str] = (), *, nproc: int = 1,
           cwd: str | os.PathLike | None = None, tags: Sequence[str] = (),
           env: dict[str, str] | None = None) -> Launched:
    """Validate, prepare and queue a new run of `spec_path` (relative to `cwd`)."""
    cwd = Path(cwd or os.getcwd()).resolve()
    spec = check_spec(cwd / spec_path, overrides, nproc)
    command = train_command(spec_path, overrides, nproc=nproc)
    run_dir = prepare(spec, command, cwd=cwd, nproc=nproc, env=env, tags=tags)
    return submit(run_dir, spec.logging.run_name, command)


def read_launch(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / LAUNCH).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"{run_dir / LAUNCH}: unreadable ({err})") from None
    return data if isinstance(data, dict) else None


def write_launch(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(run_dir / LAUNCH, record)


def start_run(run_dir: Path, slot: SharedLock) -> Any:
    """Start the supervisor of a queued run, handing it `slot` (the queue server calls this)."""
    record = read_launch(run_dir)
    if record is None or not (run_dir / STATUS).exists():
        return None  # the directory went away while it waited
    argv = detached.python_module("ddpcifar.runs", "_supervise", str(run_dir),
                                  "--slot-fd", str(slot.fd))
    proc = detached.spawn(argv, log=run_dir / LOG, cwd=record.get("cwd"),
                          env=detached.repo_env(), pass_fds=[slot.fd])
    record["supervisor"] = ProcessRef.of(proc.pid).to_json()
    write_launch(run_dir, record)
    return proc
