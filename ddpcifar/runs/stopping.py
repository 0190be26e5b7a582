"""Stopping a run on request: SIGTERM or SIGINT ends it cleanly at the next step boundary.

`runs stop`, the dashboard, `kill`, Ctrl-C and SLURM before a preemption all send a signal. The
first one sets a flag; the engine finishes its current step, writes a checkpoint and ends the
run as `stopped`. Signals that arrive within `debounce_s` of the first are the same request
(Ctrl-C under torchrun reaches a rank twice: from the terminal and forwarded by the agent). A
signal after that escalates: `StopNow` is raised at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopNow(BaseException):
    """A second stop signal: end now, without finishing the step. BaseException like
    KeyboardInterrupt, so no `except Exception` on the way swallows it."""


class StopRequest:
    """Catches the stop signals while installed (a context manager; main thread only)."""

    def __init__(self, debounce_s: float = 2.0) -> None:
        self.debounce_s = debounce_s
        self.signal: int | None = None  # the first signal received
        self._first_at: float | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as a signal would (tests, or a caller that learnt of it otherwise)."""
        if self.signal is None:
            self.signal, self._first_at = signum, time.monotonic()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.request(signum)
            return
        if time.monotonic() - (self._first_at or 0.0) > self.debounce_s:
            raise StopNow(f"second stop signal ({signal.Signals(signum).name})")

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def describe(self) -> str:
        name = signal.Signals(self.signal).name if self.signal is not None else "request"
        return f"stopped by {name}"
