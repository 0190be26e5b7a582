"""A queue of runs per machine, kept in the runs directory, and the process that serves it.

`RUNS/.queue/<host>.json` holds the machine's slot count (how many runs may train at once,
default 1) and the order of the runs waiting. A slot is a `SharedLock` on
`RUNS/.queue/<host>.slot<k>.lock`, taken by whoever starts a run and inherited by the run's
launcher and torchrun, so a slot is busy exactly while the run's processes live; a sweep's
trials take slots the same way (its worker processes do not, so a worker never waits on itself).

What serves the queue: `python -m ddpcifar.runs _serve RUNS`, a small process started on
demand by whoever adds to the queue (the CLI, the dashboard) or frees a slot (a run's
supervisor, as it exits). It holds `RUNS/.queue/<host>.serve.lock` so there is at most one per
machine and runs directory, starts the head of the queue whenever a slot is free, and exits as
soon as the queue is empty: with nothing queued, nothing of it is left running. An existing
spooler would not do: task-spooler keeps its queue per user in /tmp behind a socket, invisible
to the runs directory the dashboard and a second machine read; at/batch start jobs by load
average, not by a slot count; SLURM is a cluster service to install and administer.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ddpcifar.atomic import write_json
from ddpcifar.errors import UserError
from ddpcifar.runs import detached
from ddpcifar.runs.locks import SharedLock, is_flocked
from ddpcifar.runs.procs import this_host

QUEUE_DIR = ".queue"
DEFAULT_SLOTS = 1
MAX_SLOTS = 64
POLL_S = 0.5


@dataclass
class Queue:
    """One machine's queue: slot count and waiting run names (relative to the runs directory)."""

    slots: int = DEFAULT_SLOTS
    order: list[str] = field(default_factory=list)


def queue_dir(runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / QUEUE_DIR


def _path(runs_dir: str | os.PathLike, host: str, suffix: str) -> Path:
    return queue_dir(runs_dir) / f"{host}{suffix}"


def _read(path: Path) -> Queue:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Queue()
    except (OSError, ValueError) as err:
        raise UserError(f"queue file {path} is unreadable ({err}); fix or delete it") from None
    slots = data.get("slots", DEFAULT_SLOTS) if isinstance(data, dict) else DEFAULT_SLOTS
    order = data.get("order", []) if isinstance(data, dict) else []
    return Queue(slots=int(slots), order=[str(n) for n in order])


@contextmanager
def locked(runs_dir: str | os.PathLike, host: str | None = None) -> Iterator[Queue]:
    """The machine's queue, under its lock; written back (atomically) when the block ends."""
    host = host or this_host()
    queue_dir(runs_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(_path(runs_dir, host, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        queue = _read(_path(runs_dir, host, ".json"))
        before = (queue.slots, list(queue.order))
        yield queue
        if (queue.slots, queue.order) != before:
            write_json(_path(runs_dir, host, ".json"),
                       {"host": host, "slots": queue.slots, "order": queue.order})
    finally:
        os.close(fd)


def read_queue(runs_dir: str | os.PathLike, host: str | None = None) -> Queue:
    """A snapshot of the machine's queue, without locking (for display)."""
    return _read(_path(runs_dir, host or this_host(), ".json"))


def queue_positions(runs_dir: str | os.PathLike) -> dict[str, int]:
    """1-based queue position of every waiting run, over every machine's queue file."""
    positions: dict[str, int] = {}
    try:
        files = list(queue_dir(runs_dir).glob("*.json"))
    except OSError:
        return positions
    for path in files:
        try:
            queue = _read(path)
        except UserError:
            continue
        for i, name in enumerate(queue.order, start=1):
            positions.setdefault(name, i)
    return positions


def in_any_queue(launch: dict) -> bool:
    """True if the run of this launch record is waiting in its machine's queue."""
    where = launch.get("queue") if isinstance(launch, dict) else None
    if not isinstance(where, dict):
        return False
    try:
        return where.get("name") in read_queue(where["runs_dir"], where.get("host")).order
    except (KeyError, UserError):
        return False


def enqueue(runs_dir: str | os.PathLike, name: str) -> int:
    """Add a run at the end of this machine's queue; its 1-based position."""
    with locked(runs_dir) as queue:
        if name not in queue.order:
            queue.order.append(name)
        return queue.order.index(name) + 1


def remove(runs_dir: str | os.PathLike, name: str) -> bool:
    """Take a run out of the queue; False if it was not waiting."""
    with locked(runs_dir) as queue:
        if name not in queue.order:
            return False
        queue.order.remove(name)
        return True


def move(runs_dir: str | os.PathLike, name: str, position: int) -> int:
    """Put a waiting run at 1-based `position` (clamped); its new position."""
    with locked(runs_dir) as queue:
        if name not in queue.order:
            raise UserError(f"{name} is not waiting in the queue of {Path(runs_dir)}")
        queue.order.remove(name)
        index = min(max(position, 1), len(queue.order) + 1) - 1
        queue.order.insert(index, name)
        return index + 1


def set_slots(runs_dir: str | os.PathLike, slots: int) -> None:
    if not 1 <= slots <= MAX_SLOTS:
        raise UserError(f"--slots must be between 1 and {MAX_SLOTS}: {slots}")
    with locked(runs_dir) as queue:
        queue.slots = slots


def _slot_path(runs_dir: str | os.PathLike, k: int) -> Path:
    return _path(runs_dir, this_host(), f".slot{k}.lock")


def take_slot(runs_dir: str | os.PathLike, holder: str, slots: int | None = None) -> SharedLock | None:
    """A free slot of this machine, or None when all `slots` are busy."""
    queue_dir(runs_dir).mkdir(parents=True, exist_ok=True)
    count = read_queue(runs_dir).slots if slots is None else slots
    for k in range(count):
        lock = SharedLock.try_acquire(_slot_path(runs_dir, k), holder)
        if lock is not None:
            return lock
    return None


def wait_slot(runs_dir: str | os.PathLike, holder: str,
              cancelled: Callable[[], bool] = lambda: False) -> SharedLock | None:
    """Block until a slot is free (a sweep's trial); None if `cancelled()` turns true first."""
    while not cancelled():
        lock = take_slot(runs_dir, holder)
        if lock is not None:
            return lock
        time.sleep(POLL_S)
    return None


def busy_slots(runs_dir: str | os.PathLike) -> list[str]:
    """What holds each busy slot of this machine (the holder text written when it was taken)."""
    out = []
    for path in sorted(queue_dir(runs_dir).glob(f"{this_host()}.slot*.lock")):
        if is_flocked(path):
            try:
                out.append(path.read_text().strip())
            except OSError:
                out.append("?")
    return out


def ensure_server(runs_dir: str | os.PathLike) -> bool:
    """Start the queue server if runs are waiting and none serves them; True if started."""
    if not read_queue(runs_dir).order or is_flocked(_path(runs_dir, this_host(), ".serve.lock")):
        return False
    log = queue_dir(runs_dir) / f"{this_host()}.serve.log"
    detached.spawn(detached.python_module("ddpcifar.runs", "_serve", str(Path(runs_dir).resolve())),
                   log=log, env=detached.repo_env())
    return True


StartRun = Callable[[Path, SharedLock], subprocess.Popen | None]


def serve(runs_dir: str | os.PathLike, start_run: StartRun) -> int:
    """The queue server's loop: start waiting runs as slots free up; return how many started.

    `start_run(run_dir, slot)` launches one run holding `slot` (ddpcifar.runs.launch).
    """
    runs_dir = Path(runs_dir)
    serving = SharedLock.try_acquire(_path(runs_dir, this_host(), ".serve.lock"), str(os.getpid()))
    if serving is None:
        return 0  # another server has this queue
    started = 0
    while True:
        slot, name = None, None
        with locked(runs_dir) as queue:
            if not queue.order:
                # Released under the queue lock: whoever enqueues after this sees no server
                # and starts one; whoever enqueued before was seen just now.
                serving.release()
                return started
            slot = take_slot(runs_dir, queue.order[0], queue.slots)
            if slot is not None:
                name = queue.order.pop(0)
        if slot is None or name is None:
            time.sleep(POLL_S)
            continue
        try:
            if start_run(runs_dir / name, slot) is not None:
                started += 1
        finally:
            slot.release()  # the run's processes hold it now
