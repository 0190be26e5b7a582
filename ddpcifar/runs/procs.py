"""Which process and host a run belongs to, and whether that process is still the same one.

A pid alone is not an identity: after a crash the number can be reused by an unrelated process.
A `ProcessRef` adds the process's start time (clock ticks since boot, from /proc), so "alive"
means "this pid exists and started when ours did", and the host it ran on, so a reader on
another machine (a shared file system) says "remote" instead of guessing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any


def this_host() -> str:
    return socket.gethostname()


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (Linux); None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 of proc_pid_stat(5)
    except (IndexError, ValueError):
        return None


def pid_exists(pid: int) -> bool:
    """True if a process with this id exists here (signal 0 probes without sending)."""
    if pid <= 0:
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


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    host: str
    start: int | None = None  # start_ticks(pid) when recorded

    @classmethod
    def me(cls) -> "ProcessRef":
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> "ProcessRef":
        return cls(pid=pid, host=this_host(), start=start_ticks(pid))

    @classmethod
    def from_json(cls, data: Any) -> "ProcessRef | None":
        """Tolerant: None for anything that is not a recorded process."""
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return None
        start = data.get("start")
        return cls(pid=data["pid"], host=str(data.get("host") or this_host()),
                   start=start if isinstance(start, int) else None)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "start": self.start}

    @property
    def local(self) -> bool:
        return self.host == this_host()

    def alive(self) -> bool:
        """On this host: the same process still exists. Never call it for a remote process."""
        if not pid_exists(self.pid):
            return False
        return self.start is None or start_ticks(self.pid) in (None, self.start)
