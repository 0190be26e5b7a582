"""Acting on existing runs: stop, resume, clone, cancel, tag. The CLI and the dashboard both call
these, so a run is stopped or resumed the same way whichever started it (`runs launch`, the
dashboard, a sweep or a plain torchrun command in a shell)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ddpcifar.errors import UserError
from ddpcifar.runs import queue, states
from ddpcifar.runs.launch import (Launched, check_spec, display, prepare, read_launch, runs_root,
                                  submit, train_command, write_launch)
from ddpcifar.runs.procs import ProcessRef
from ddpcifar.runs.reader import RunInfo, read_run_dir
from ddpcifar.runs.ending import end_run
from ddpcifar.runs.rundir import METRICS, SPEC, read_state, update_status, write_tags

CHECKPOINTS = ("last.pt", "prev.pt")


def info_of(run_dir: str | os.PathLike) -> RunInfo:
    return read_run_dir(Path(run_dir).resolve(), time.time())


def _not_remote(info: RunInfo, action: str) -> None:
    if info.state == states.REMOTE:
        raise UserError(f"cannot {action} {info.name} from here: it runs on host {info.host} "
                        f"(pid {info.pid}); run `python -m ddpcifar.runs {action} {info.path}` "
                        f"on {info.host}, or `kill -TERM {info.pid}` there")


@dataclass(frozen=True)
class Stopping:
    info: RunInfo
    how: str  # one line: what was signalled

    def line(self) -> str:
        return f"stopping {self.info.name}: {self.how}"


def stop(run_dir: str | os.PathLike, *, kill: bool = False) -> Stopping:
    """Ask a running run to stop (SIGTERM: finish the step, checkpoint, end as stopped); a
    second stop, or `kill`, kills it. A queued run is cancelled instead."""
    info = info_of(run_dir)
    _not_remote(info, "stop")
    states.require("stop", info.state, info.name)
    if info.state == states.QUEUED:
        return Stopping(info, cancel(info.path))
    launch = read_launch(info.path)
    if info.sweep is not None:  # a trial: stop its torchrun; the sweep's worker goes on
        agent = ProcessRef.from_json((launch or {}).get("agent"))
        if agent is None or not agent.alive():
            raise UserError(f"cannot stop {info.name}: its torchrun is gone")
        os.kill(agent.pid, signal.SIGKILL if kill else signal.SIGTERM)
        return Stopping(info, f"{'SIGKILL' if kill else 'SIGTERM'} sent to its torchrun (pid "
                              f"{agent.pid}); the sweep records the trial as failed and goes on")
    supervisor = ProcessRef.from_json(launch.get("supervisor")) if launch else None
    if supervisor is not None and supervisor.alive():
        again = bool(launch.get("stop_requested")) if launch else False
        sends = 2 if kill and not again else 1
        for _ in range(sends):
            os.kill(supervisor.pid, signal.SIGTERM)
            time.sleep(0.05)
        if kill or again:
            return Stopping(info, f"killing its processes now (supervisor pid {supervisor.pid})")
        return Stopping(info, f"SIGTERM sent (supervisor pid {supervisor.pid}); it finishes "
                              "its step, writes a checkpoint and ends as stopped")
    # Started by hand (torchrun in a shell): signal torchrun, which signals every rank, or
    # rank 0, which tells the others at the next step.
    target = _plain_run_target(info)
    os.kill(target.pid, signal.SIGKILL if kill else signal.SIGTERM)
    if kill:
        return Stopping(info, f"SIGKILL sent to pid {target.pid}")
    return Stopping(info, f"SIGTERM sent to pid {target.pid}; it finishes its step, writes a "
                          "checkpoint and ends as stopped (stop it again to kill it)")


def _plain_run_target(info: RunInfo) -> ProcessRef:
    import json

    status = json.loads((info.path / "status.json").read_text())
    for ref in (ProcessRef.from_json(status.get("agent")),
                ProcessRef.from_json({"pid": status.get("pid"), "start": status.get("pid_start"),
                                      "host": status.get("host")})):
        if ref is not None and ref.local and ref.alive():
            return ref
    raise UserError(f"cannot stop {info.name}: its processes are gone (it is lost); "
                    f"resume it with `python -m ddpcifar.runs resume {info.path}`")


def cancel(run_dir: str | os.PathLike) -> str:
    """Take a queued run out of the queue; it becomes `stopped` (nothing is deleted)."""
    run_dir = Path(run_dir).resolve()
    root, name = runs_root(run_dir)
    if read_state(run_dir) != states.QUEUED:
        raise UserError(f"cannot cancel {name}: it is not queued")
    if not queue.remove(root, name):
        raise UserError(f"cannot cancel {name}: it has left the queue and is starting")
    started = (run_dir / METRICS).exists()
    end_run(run_dir, states.STOPPED,
            error="cancelled while queued" if not started else "resume cancelled while queued")
    return "taken out of the queue (now stopped; `resume` queues it again)"


def resume(run_dir: str | os.PathLike, *, nproc: int | None = None) -> Launched:
    """Queue a stopped, failed or lost run to continue from its last checkpoint."""
    info = info_of(run_dir)
    _not_remote(info, "resume")
    states.require("resume", info.state, info.name)
    if info.engine == "numpy":
        raise UserError(f"cannot resume {info.name}: the NumPy engine does not resume; start it "
                        f"again with `python -m ddpcifar.runs clone {info.path}`")
    started = (info.path / METRICS).exists()
    has_checkpoint = any((info.path / "checkpoints" / n).exists() for n in CHECKPOINTS)
    if started and not has_checkpoint:
        raise UserError(f"cannot resume {info.name}: it has no checkpoint (it ended before the "
                        f"first one); start it again with `python -m ddpcifar.runs clone {info.path}`")
    launch = read_launch(info.path)
    world = nproc or (launch or {}).get("nproc") or info.world_size or 1
    # The run's own resolved spec, not the file it was launched from: that may have changed.
    command = train_command(info.path / SPEC, nproc=world, resume=started)
    if launch is None:
        launch = _adopt(info, command, infer_cwd(info), world)
    check_spec(info.path / SPEC, [], world)
    launch.update(command=command, display=display(command), nproc=world,
                  stop_requested=None, supervisor=None, agent=None)
    launch.setdefault("attempts", []).append({"action": "resume", "queued": time.time()})
    write_launch(info.path, launch)
    update_status(info.path, state=states.QUEUED, error=None)
    return submit(info.path, info.name, command)


def _adopt(info: RunInfo, command: list[str], cwd: Path, nproc: int) -> dict:
    """A launch record for a run that was started by hand, so the queue can run it."""
    from ddpcifar.runs.launch import LAUNCH_ENV, LAUNCH_FORMAT
    from ddpcifar.runs.procs import this_host

    root, name = runs_root(info.path)
    return {"format": LAUNCH_FORMAT, "name": name, "command": command,
            "display": display(command), "cwd": str(cwd), "env": dict(LAUNCH_ENV),
            "nproc": nproc, "host": this_host(), "created": time.time(),
            "launcher": ProcessRef.me().to_json(), "supervisor": None, "agent": None,
            "stop_requested": None,
            "queue": {"runs_dir": str(root), "name": name, "host": this_host()}, "attempts": []}


def infer_cwd(info: RunInfo) -> Path:
    """The working directory a hand-started run was launched from: where its spec's relative
    `logging.runs_dir/run_name` lands on this directory (else the current directory)."""
    runs_dir = info.spec_value("logging.runs_dir")
    name = info.spec_value("logging.run_name")
    if isinstance(runs_dir, str) and isinstance(name, str) and not os.path.isabs(runs_dir):
        tail = Path(runs_dir, name).parts
        parts = info.path.resolve().parts
        if parts[-len(tail):] == tail:
            return Path(*parts[:-len(tail)])
    return Path.cwd()


def clone(run_dir: str | os.PathLike, overrides: Sequence[str] = (), *, name: str | None = None,
          nproc: int | None = None, tags: Sequence[str] = ()) -> Launched:
    """Queue a new run: this run's spec with `overrides`, under a new name (`name`, else
    `logging.run_name` among the overrides, else the next free NAME-k)."""
    info = info_of(run_dir)
    launch = read_launch(info.path)
    world = nproc or (launch or {}).get("nproc") or info.world_size or 1
    root, _ = runs_root(info.path)
    overrides = list(overrides)
    if name is not None or not _sets(overrides, "logging.run_name"):
        overrides.append(f"logging.run_name={name or next_free_name(root, info.path.name)}")
    if info.sweep is not None and not _sets(overrides, "logging.runs_dir"):
        overrides.append(f"logging.runs_dir={root}")  # a trial's clone is an ordinary run
    spec_path = info.path / SPEC
    spec = check_spec(spec_path, overrides, world)
    command = train_command(spec_path, overrides, nproc=world)
    new_dir = prepare(spec, command, cwd=launch_cwd(info), nproc=world,
                      tags=tags or info.tags, env=(launch or {}).get("env"))
    return submit(new_dir, spec.logging.run_name, command)


def launch_cwd(info: RunInfo) -> Path:
    """Where the run was started from: its launch record's directory, else inferred."""
    launch = read_launch(info.path)
    return Path(launch["cwd"]) if launch and launch.get("cwd") else infer_cwd(info)


def _sets(overrides: Sequence[str], path: str) -> bool:
    return any(o.partition("=")[0].strip() == path for o in overrides)


def next_free_name(runs_dir: Path, base: str) -> str:
    """`base-2`, `base-3`, ...: the first that names no directory yet."""
    stem = base.rsplit("-", 1)[0] if base.rsplit("-", 1)[-1].isdigit() else base
    k = 2
    while (runs_dir / f"{stem}-{k}").exists():
        k += 1
    return f"{stem}-{k}"


def tag(run_dir: str | os.PathLike, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
    info = info_of(run_dir)
    return write_tags(info.path, [t for t in (*info.tags, *add) if t not in set(remove)])
