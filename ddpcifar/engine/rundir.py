"""The run directory writer: the only code that writes `runs/<name>/` (docs/run_directory.md).

Torch-free on purpose: the NumPy engine and the TUI's test fixtures use it too. Rank 0 gets a
`RunDir`; every other rank gets a `NullRunDir` with the same methods that do nothing, so callers
never need a rank check.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ddpcifar.atomic import atomic_open, write_json
from ddpcifar.errors import UserError

FORMAT_VERSION = 1


def spread_by_class(true_classes: Sequence[int], limit: int) -> list[int]:
    """Positions of up to `limit` items taken round-robin over their true classes, ascending.

    Which misclassified samples a run keeps: the first N by index would all be one class when
    a split is stored class by class (an image-folder source), so every class gets its turn.
    """
    by_class: dict[int, list[int]] = {}
    for position, cls in enumerate(true_classes):
        by_class.setdefault(int(cls), []).append(position)
    queues = [by_class[c] for c in sorted(by_class)]
    picked: list[int] = []
    depth = 0
    while len(picked) < limit and any(depth < len(q) for q in queues):
        picked.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return sorted(picked[:limit])


LOCK_NAME = ".lock"


@contextmanager
def claim_run_dir(path: str | os.PathLike) -> Iterator[None]:
    """Hold the run directory for one run: a second run launched into it is refused.

    An exclusive flock on `<run>/.lock`, taken before the directory is checked for an existing
    run and held until training ends, so two launches of the same run name (a script started
    twice) cannot both pass that check and write into one directory. The kernel releases the
    lock when its process dies, so a crashed or killed run leaves nothing stale behind. On
    release the lock file goes, and so do the directories it created if they are still empty.
    """
    run_dir = Path(path)
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_NAME
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"run directory {run_dir} is in use by another run (pid {holder}); "
                            "wait for it to finish or pick another name with "
                            "--set logging.run_name=NAME") from None
        try:  # the holder before us may have removed the file between our open and flock
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)
        for d in created:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break


class RunDir:
    """Writes spec, status, metrics, samples and summary for one run."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        name: str,
        model: str,
        engine: str,
        epochs: int,
        world_size: int,
        classes: Sequence[str],
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "samples").mkdir(exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        # A process killed inside an atomic write leaves its temporary file behind; the
        # completed files it would have replaced are intact, so the leftovers can go.
        for stale in (self.path / "checkpoints").glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        self._status: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "name": name,
            "model": model,
            "engine": engine,
            "state": "running",
            "epoch": 0,
            "epochs": epochs,
            "world_size": world_size,
            "classes": list(classes),
            "started": time.time(),
            "updated": time.time(),
            "pid": os.getpid(),
            "best_top1": None,
            "last_top1": None,
            "images_per_s": None,
            "error": None,
        }
        if resume and (self.path / "status.json").exists():
            old = json.loads((self.path / "status.json").read_text())
            for key in ("started", "epoch", "best_top1", "last_top1", "images_per_s"):
                if key in old:
                    self._status[key] = old[key]
        # Wall time continues across restarts: `time` in metrics.jsonl is relative to `started`.
        self._t0 = self._status["started"]
        self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")
        self.write_status()

    @property
    def is_writer(self) -> bool:
        return True

    def elapsed(self) -> float:
        return time.time() - self._t0

    def write_spec(self, spec: dict[str, Any]) -> None:
        write_json(self.path / "spec.json", spec)

    def write_status(self, **changes: Any) -> None:
        self._status.update(changes)
        self._status["updated"] = time.time()
        self._status["pid"] = os.getpid()
        write_json(self.path / "status.json", self._status)

    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and flush it, so followers see it at once."""
        line = {"kind": kind, "epoch": epoch, "step": step, "time": round(self.elapsed(), 3),
                "values": values}
        self._metrics.write(json.dumps(line) + "\n")
        self._metrics.flush()

    def metrics_bytes(self) -> int:
        """Size of metrics.jsonl now; a checkpoint records it so a resume can cut back to it."""
        self._metrics.flush()
        return self._metrics.tell()

    def truncate_metrics(self, size: int) -> None:
        """Drop lines written after the checkpoint being resumed (no duplicates on replay)."""
        self._metrics.flush()
        os.truncate(self.path / "metrics.jsonl", size)

    def write_samples(
        self,
        epoch: int,
        *,
        images: np.ndarray,
        true: np.ndarray,
        pred: np.ndarray,
        confidence: np.ndarray,
        index: np.ndarray,
    ) -> Path:
        """Save the misclassified test images of one evaluation (HWC uint8 RGB)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        out = self.path / "samples" / f"epoch_{epoch:04d}.npz"
        with atomic_open(out, "wb") as fh:
            np.savez_compressed(
                fh,
                images=images,
                true=np.asarray(true, dtype=np.int64),
                pred=np.asarray(pred, dtype=np.int64),
                confidence=np.asarray(confidence, dtype=np.float32),
                index=np.asarray(index, dtype=np.int64),
            )
        return out

    def write_summary(self, summary: dict[str, Any]) -> None:
        body = {"format": FORMAT_VERSION, "name": self._status["name"],
                "model": self._status["model"], "engine": self._status["engine"],
                "epochs": self._status["epochs"], "world_size": self._status["world_size"],
                "classes": self._status["classes"]}
        body.update(summary)
        write_json(self.path / "summary.json", body)

    def finish(self, state: str = "finished", error: str | None = None) -> None:
        self.write_status(state=state, error=error)
        self.close()

    def close(self) -> None:
        if not self._metrics.closed:
            self._metrics.close()


class NullRunDir:
    """What non-writing ranks get: the RunDir interface, doing nothing."""

    def __init__(self, path: str | os.PathLike, **_: Any) -> None:
        self.path = Path(path)
        self._t0 = time.time()

    @property
    def is_writer(self) -> bool:
        return False

    def elapsed(self) -> float:
        return time.time() - self._t0

    def write_spec(self, spec: dict[str, Any]) -> None: ...
    def write_status(self, **changes: Any) -> None: ...
    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None: ...
    def metrics_bytes(self) -> int:
        return 0

    def truncate_metrics(self, size: int) -> None: ...
    def write_samples(self, epoch: int, **arrays: Any) -> None: ...
    def write_summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self, state: str = "finished", error: str | None = None) -> None: ...
    def close(self) -> None: ...
