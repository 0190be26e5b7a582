"""The two kinds of file lock the run lifecycle uses, and why they differ.

- `ProcessLock` (POSIX `lockf`): held by this process only. A child made by fork() does not
  inherit it, so the loader workers that a training rank forks cannot keep a run directory
  claimed after the rank itself died (an elastic restart would then be refused).
- `SharedLock` (BSD `flock`): belongs to the open file, so a child that inherits the file
  descriptor holds it too. A queue slot is taken by whoever launches a run and handed down to
  the run's processes, so the slot stays taken exactly as long as any of them lives.

Both are dropped by the kernel when their holders die: nothing is ever left stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockBusy(Exception):
    """The lock is held elsewhere; `holder` is what the holder wrote into the file."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").strip() or "unknown"


def _write_holder(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{text}\n".encode(), 0)


class ProcessLock:
    """An exclusive lock on `path` owned by this process (not by forked children).

    POSIX locks are per process: a second lock of the same file in the same process would
    silently succeed, so this process's own holdings are tracked to refuse that too. Closing any
    descriptor of the file drops a POSIX lock, which is why only this class opens it.
    """

    _held: dict[str, "ProcessLock"] = {}

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        """Take the lock and write `holder` into the file; LockBusy if someone has it."""
        key = os.path.realpath(self.path)
        if key in self._held:
            raise LockBusy(self.path, _holder_text(self.path))
        while True:
            fd = _open(self.path)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder_text = _read_holder(fd)
                os.close(fd)
                raise LockBusy(self.path, holder_text) from None
            # The previous holder may have unlinked the file between our open and lock.
            if _same_file(self.path, fd):
                break
            os.close(fd)
        _write_holder(fd, holder)
        self._fd = fd
        self._held[key] = self

    def release(self, *, unlink: bool = True) -> None:
        if self._fd is None:
            return
        self._held.pop(os.path.realpath(self.path), None)
        if unlink:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


class SharedLock:
    """An exclusive `flock` on `path`, shared with every child that inherits `fd`."""

    def __init__(self, path: str | os.PathLike, fd: int) -> None:
        self.path, self.fd = Path(path), fd

    @classmethod
    def try_acquire(cls, path: str | os.PathLike, holder: str) -> "SharedLock | None":
        path = Path(path)
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        _write_holder(fd, holder)
        return cls(path, fd)

    def release(self) -> None:
        """Close this process's descriptor (children that inherited it keep the lock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def is_flocked(path: str | os.PathLike) -> bool:
    """True if some process holds a `SharedLock` on `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _holder_text(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
