"""The run directory writer: the only code that writes a run's files (docs/run_directory.md).

Torch-free: both engines, the launcher and the sweeps use it. Rank 0 gets a `RunDir`; every
other rank a `NullRunDir` with the same methods doing nothing, so callers never need a rank check.
"""

from __future__ import annotations

import errno
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ddpcifar.atomic import atomic_open, write_json
from ddpcifar.errors import UserError
from ddpcifar.runs import states
from ddpcifar.runs.locks import LockBusy, ProcessLock
from ddpcifar.runs.procs import ProcessRef

FORMAT_VERSION = 2
LOCK_NAME = ".lock"
STATUS = "status.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
SPEC = "spec.json"
LAUNCH = "launch.json"
LOG = "run.log"
TAGS = "tags.json"
VALIDATION = "validation.json"
INDICES = "indices"  # logging.sample_indices: indices/rank<R>.jsonl
# What a full disk raises: no space left, or the user's quota spent.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class WriteFailed(UserError):
    """A run's file could not be written for lack of space: one line, exit status 1 (like a
    crash, not a refused input). The run stops; its latest complete checkpoint stays loadable."""

    exit_code = 1


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk while writing `path` into a one-line WriteFailed; other errors pass."""
    try:
        yield
    except OSError as err:
        if err.errno not in NO_SPACE:
            raise
        raise WriteFailed(f"no space left on the device writing {path}; the run stopped and its "
                          "latest complete checkpoint is intact: free some space and continue "
                          "it with --resume") from None


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


@contextmanager
def claim_run_dir(path: str | os.PathLike) -> Iterator[None]:
    """Hold the run directory for one run: a second run launched into it is refused.

    A lock on `<run>/.lock`, taken before the directory is checked for an existing run and held
    until training ends, so two launches of the same run name (a script started twice) cannot
    both pass that check. It is a per-process lock (ddpcifar.runs.locks.ProcessLock): the
    loader workers a rank forks do not inherit it, and the kernel drops it when the rank dies,
    so a restarted group finds the directory free at once. On release the lock file goes, and
    so do the directories the claim created if they are still empty.
    """
    run_dir = Path(path)
    created = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = ProcessLock(run_dir / LOCK_NAME)
    try:
        lock.acquire(str(os.getpid()))
    except LockBusy as busy:
        raise UserError(f"run directory {run_dir} is in use by another run (pid {busy.holder}); "
                        "wait for it to finish or pick another name with "
                        "--set logging.run_name=NAME") from None
    try:
        yield
    finally:
        lock.release()
        for d in created:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break


def read_state(run_dir: str | os.PathLike) -> str | None:
    """The stored state of a run directory, None when it has no readable status.json."""
    try:
        status = json.loads((Path(run_dir) / STATUS).read_text())
    except (OSError, ValueError):
        return None
    return status.get("state") if isinstance(status, dict) else None


def has_started(run_dir: str | os.PathLike) -> bool:
    """True once training has begun in `run_dir` (a queued run directory has not)."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS).exists():
        return True
    state = read_state(run_dir)
    return (run_dir / STATUS).exists() and state != states.QUEUED


def update_status(run_dir: str | os.PathLike, **changes: Any) -> dict[str, Any]:
    """Change fields of an existing status.json from outside the run (launcher, sweep, CLI).
    To end a run from outside, use ddpcifar.runs.ending.end_run (it rewrites the card too)."""
    path = Path(run_dir) / STATUS
    status = json.loads(path.read_text())
    status.update(changes)
    status["updated"] = time.time()
    write_json(path, status)
    return status


def write_tags(run_dir: str | os.PathLike, tags: Sequence[str]) -> list[str]:
    """Store the run's tags (sorted, unique); tags are the user's, never the trainer's."""
    clean = sorted({t.strip() for t in tags if t.strip()})
    for tag in clean:
        if any(c.isspace() for c in tag) or "," in tag:
            raise UserError(f"tag {tag!r} must not contain spaces or commas")
    write_json(Path(run_dir) / TAGS, clean)
    return clean


def new_status(*, name: str, model: str, engine: str, epochs: int, world_size: int,
               classes: Sequence[str], state: str, process: ProcessRef) -> dict[str, Any]:
    """A complete status.json body; `process` is the rank-0 (or launcher) process."""
    now = time.time()
    return {
        "format": FORMAT_VERSION,
        "name": name,
        "model": model,
        "engine": engine,
        "state": state,
        "epoch": 0,
        "epochs": epochs,
        "world_size": world_size,
        "classes": list(classes),
        "started": now,
        "updated": now,
        "pid": process.pid,
        "pid_start": process.start,
        "host": process.host,
        "agent": None,  # torchrun's agent (rank 0's parent), when launched by torchrun
        "best_top1": None,
        "last_top1": None,
        "top1_tta": None,
        "val_top1": None,
        "images_per_s": None,
        "error": None,
    }


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
        for where in (self.path, *(self.path / d for d in ("checkpoints", "samples", "card"))):
            for stale in where.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        self._status = new_status(name=name, model=model, engine=engine, epochs=epochs,
                                  world_size=world_size, classes=classes, state=states.RUNNING,
                                  process=ProcessRef.me())
        if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun keeps the run alive across restarts
            self._status["agent"] = ProcessRef.of(os.getppid()).to_json()
        if resume and (self.path / STATUS).exists():
            old = json.loads((self.path / STATUS).read_text())
            for key in ("started", "epoch", "best_top1", "last_top1", "top1_tta", "val_top1",
                        "images_per_s"):
                if key in old:
                    self._status[key] = old[key]
        # Wall time continues across restarts: `time` in metrics.jsonl is relative to `started`.
        self._t0 = self._status["started"]
        self._metrics = open(self.path / METRICS, "a", encoding="utf-8")
        self.write_status()

    @property
    def is_writer(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return self._status["name"]

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def elapsed(self) -> float:
        return time.time() - self._t0

    def write_spec(self, spec: dict[str, Any]) -> None:
        with writing(self.path / SPEC):
            write_json(self.path / SPEC, spec)

    def write_validation(self, record: dict[str, Any]) -> None:
        """The validation split the run holds out (ddpcifar.data.orders.validation_record)."""
        with writing(self.path / VALIDATION):
            write_json(self.path / VALIDATION, record)

    def write_status(self, **changes: Any) -> None:
        self._status.update(changes)
        self._status["updated"] = time.time()
        path = self.path / STATUS
        try:
            write_json(path, self._status)
        except OSError as err:
            if err.errno not in NO_SPACE or not path.exists():
                raise
            # A full disk: the atomic copy needs room for a second file, rewriting in place
            # only the pages status.json already has. Not atomic, but it says how the run ended.
            text = json.dumps(self._status, indent=2) + "\n"
            with writing(path), open(path, "r+", encoding="utf-8") as fh:
                fh.write(text)
                fh.truncate()

    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl and flush it, so followers see it at once."""
        line = {"kind": kind, "epoch": epoch, "step": step, "time": round(self.elapsed(), 3),
                "values": values}
        with writing(self.path / METRICS):
            self._metrics.write(json.dumps(line) + "\n")
            self._metrics.flush()

    def metrics_bytes(self) -> int:
        """Size of metrics.jsonl now; a checkpoint records it so a resume can cut back to it."""
        with writing(self.path / METRICS):
            self._metrics.flush()
        return self._metrics.tell()

    def truncate_metrics(self, size: int) -> None:
        """Drop lines written after the checkpoint being resumed (no duplicates on replay)."""
        self._metrics.flush()
        os.truncate(self.path / METRICS, size)

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
        with writing(out), atomic_open(out, "wb") as fh:
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
        with writing(self.path / SUMMARY):
            write_json(self.path / SUMMARY, summary)

    def finish(self, state: str = states.FINISHED, error: str | None = None) -> None:
        self.write_status(state=state, error=error)
        self.close()

    def close(self) -> None:
        if not self._metrics.closed:
            try:
                self._metrics.close()
            except OSError as err:  # a line that a full disk refused: a resume cuts it anyway
                if err.errno not in NO_SPACE:
                    raise


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

    def status(self) -> dict[str, Any]:
        return {}

    def write_spec(self, spec: dict[str, Any]) -> None: ...
    def write_validation(self, record: dict[str, Any]) -> None: ...
    def write_status(self, **changes: Any) -> None: ...
    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None: ...
    def metrics_bytes(self) -> int:
        return 0

    def truncate_metrics(self, size: int) -> None: ...
    def write_samples(self, epoch: int, **arrays: Any) -> None: ...
    def write_summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self, state: str = states.FINISHED, error: str | None = None) -> None: ...
    def close(self) -> None: ...


class IndexLog:
    """logging.sample_indices (a debug option): the split positions each training step consumed
    on this rank, one line per step in indices/rank<R>.jsonl, to check the sample order across
    restarts and changes of world size (read them back with `read_indices`).

    Like metrics.jsonl the files describe the trajectory that counts: before any rank trains,
    rank 0 (`tidy`) removes every rank's lines after the step being resumed (`keep_to`), all of
    them on a fresh start. The other ranks open their files at their first step, which comes after
    a collective with rank 0, so they never write before that clean-up.
    """

    def __init__(self, run_dir: str | os.PathLike, rank: int, *, keep_to: int, tidy: bool) -> None:
        self.dir = Path(run_dir) / INDICES
        self.path = self.dir / f"rank{rank}.jsonl"
        self._fh = None
        if tidy:
            self.dir.mkdir(parents=True, exist_ok=True)
            for path in self.dir.glob("rank*.jsonl"):
                kept = [line for line in _index_lines(path) if line["step"] <= keep_to]
                with writing(path), atomic_open(path, "w") as fh:
                    fh.writelines(json.dumps(line) + "\n" for line in kept)

    def record(self, step: int, positions: Sequence[int]) -> None:
        """The positions (in the split) of the batch this rank trained on at `step`."""
        with writing(self.path):
            if self._fh is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(json.dumps({"step": step, "index": [int(p) for p in positions]}) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NullIndexLog:
    """IndexLog's interface, doing nothing (logging.sample_indices off)."""

    def record(self, step: int, positions: Sequence[int]) -> None: ...
    def close(self) -> None: ...


def read_indices(run_dir: str | os.PathLike) -> dict[int, list[int]]:
    """Step -> the sorted positions every rank trained on at that step (the global batch)."""
    steps: dict[int, list[int]] = {}
    for path in sorted((Path(run_dir) / INDICES).glob("rank*.jsonl")):
        for line in _index_lines(path):
            steps.setdefault(line["step"], []).extend(line["index"])
    return {step: sorted(steps[step]) for step in sorted(steps)}


def _index_lines(path: Path) -> list[dict[str, Any]]:
    """An index file's complete lines (a rank killed mid-line leaves a partial last one)."""
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("step"), int):
            lines.append(line)
    return lines
