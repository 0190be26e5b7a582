"""Where a sweep's study lives, the lock that keeps its trial count exact, and heartbeats.

The default storage is Optuna's journal file in the sweep directory (`study.journal`): no server
to start, many processes append to it safely (Optuna locks it with a lock file that works on
network file systems too), and it is a plain log a user can copy. SQLite was not chosen: its
locking is unreliable on network file systems and concurrent writers get "database is locked".
Several machines share either one journal file on a shared file system or a database URL
(PostgreSQL: `postgresql://user@host:port/db`).

Heartbeats: Optuna records them only inside `study.optimize`; a sweep asks and tells itself, so
each worker writes its own. On a database storage that is Optuna's own heartbeat
(`record_heartbeat`, with its grace period); on a journal file, which has none, a `heartbeat`
system attribute of the trial. A RUNNING trial silent for 3 heartbeats belonged to a dead worker.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from ddpcifar.errors import UserError

JOURNAL = "study.journal"
HEARTBEAT_ATTR = "ddpcifar:heartbeat"
STALE_BEATS = 3  # heartbeats missed before a RUNNING trial counts as dead
_LOCK_KEY = 0x5EE9  # PostgreSQL advisory lock id (per database), shared by every sweep


def is_url(storage: str | None) -> bool:
    return storage is not None and "://" in storage


def open_storage(storage: str | None, sweep_dir: Path, heartbeat_s: float) -> BaseStorage:
    """The study's storage: the default journal file, a journal file path, or a database URL."""
    if is_url(storage):
        assert storage is not None
        beat = max(1, int(round(heartbeat_s)))
        import warnings

        try:
            with warnings.catch_warnings():  # heartbeats are an "experimental" Optuna argument
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(storage, heartbeat_interval=beat,
                                  grace_period=beat * STALE_BEATS)
        except Exception as err:  # noqa: BLE001 - SQLAlchemy and drivers raise many kinds
            raise UserError(f"storage {storage!r}: cannot connect ({str(err).splitlines()[0]})") \
                from None
    path = Path(storage) if storage else sweep_dir / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(
        str(path) + ".lock")))


@contextmanager
def sweep_lock(storage: BaseStorage, sweep_dir: Path, journal: str | None) -> Iterator[None]:
    """Exclusive across every worker of the study, on any machine: counting trials and asking
    for the next one happen inside it, so concurrent workers never overshoot `trials`."""
    if isinstance(storage, RDBStorage) and storage.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        return
    path = Path(journal) if journal else sweep_dir / JOURNAL
    lock = JournalFileOpenLock(str(path) + ".ask.lock", grace_period=30)
    while not lock.acquire():
        time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()


class Heartbeat:
    """Beats for one trial from a daemon thread while the trial runs."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval_s: float) -> None:
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def beat(self) -> None:
        if isinstance(self.storage, RDBStorage) and self.storage.get_heartbeat_interval():
            self.storage.record_heartbeat(self.trial_id)
        else:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; a dead storage shows
                pass            # up in the worker's own next call

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stale_trials(study: optuna.Study, storage: BaseStorage,
                 interval_s: float) -> list[FrozenTrial]:
    """RUNNING trials whose worker stopped beating (so died): marked FAIL here, returned.
    `storage` is the study's own (not the cache Optuna wraps a database storage in)."""
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval():
        ids = storage._get_stale_trial_ids(study._study_id)  # noqa: SLF001
    else:
        now = time.time()
        ids = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            since = beat if isinstance(beat, (int, float)) else (
                trial.datetime_start.timestamp() if trial.datetime_start else now)
            if now - since > STALE_BEATS * interval_s:
                ids.append(trial._trial_id)  # noqa: SLF001
    failed = []
    for trial_id in ids:
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    return failed


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"
