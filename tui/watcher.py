"""The polling logic behind the dashboard's worker thread, kept free of widgets so tests can call it.

Each `poll()` re-reads the run list (cheap: cached by mtime) and tails the metrics of the runs
being watched (the selected one plus any being compared).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from textual.message import Message

from tui.log_tail import LogTail
from tui.messages import (LogUpdated, MetricsUpdated, ReadProblem, RunsScanned,
                          SampleEpochsListed)
from tui.metrics import CHUNK_BYTES, MetricsLog, MetricsTail
from ddpcifar.runs.reader import RunScanner
from tui.samples import sample_epochs

# While a long backlog is read, its growing curves are posted at most every POST_INTERVAL_S
# seconds, and only once the log has grown by POST_GROWTH times since the previous post.
POST_INTERVAL_S = 0.5
POST_GROWTH = 1.5


class RunWatcher:
    """Turns the state of a runs directory into messages; call `poll` from one thread only."""

    def __init__(self, runs_dir: str | os.PathLike, clock: Callable[[], float],
                 chunk_bytes: int = CHUNK_BYTES, post_interval: float = POST_INTERVAL_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.runs_dir = Path(runs_dir)
        self.clock = clock
        self.chunk_bytes = chunk_bytes
        self.post_interval = post_interval
        self.monotonic = monotonic
        self._last_post: dict[str, tuple[float, int]] = {}  # (monotonic time, lines) per run
        self.scanner = RunScanner(runs_dir)
        self._tails: dict[str, tuple[MetricsTail, MetricsLog]] = {}
        self._posted: set[str] = set()  # runs whose current curves the UI already has
        self._epochs: dict[str, list[int]] = {}
        self._problems_seen: set[str] = set()
        self._log: tuple[str, LogTail] | None = None  # the selected run's log being followed

    def poll(self, watched: Sequence[str]) -> Iterator[Message]:
        """One round: the run list, then metrics and sample epochs for `watched` runs.

        A generator, so the caller can post each message as soon as it exists (a long
        metrics file is then drawn progressively, chunk by chunk).
        """
        scan = self.scanner.scan(self.clock())
        yield RunsScanned(scan.runs)
        for problem in scan.problems:
            yield from self._problem(problem)
        for name in watched:
            yield from self._follow(name)
        if watched:
            epochs = sample_epochs(self.runs_dir / watched[0])
            if self._epochs.get(watched[0]) != epochs:
                self._epochs[watched[0]] = epochs
                yield SampleEpochsListed(watched[0], epochs)
            yield from self._follow_log(watched[0])

    def forget_epochs(self, name: str) -> None:
        """Make the next poll re-announce `name`'s sample epochs (after a re-selection)."""
        self._epochs.pop(name, None)

    def _follow(self, name: str) -> Iterator[Message]:
        """Read `name`'s new metrics lines and post its curves.

        A long backlog is read chunk by chunk; its first chunk is posted at once, then the
        curves at most every `post_interval` seconds and only after the log grew by
        POST_GROWTH times, and the whole when the backlog is done. Each post makes the UI
        redraw every point so far: posting every chunk of a million-line log would redraw it
        ~50 times, while geometric growth keeps all the redraws within a few final ones on
        any machine. New lines of a live run arrive as one chunk and are posted at once.
        """
        if name not in self._tails:
            tail = MetricsTail(self.runs_dir / name / "metrics.jsonl", self.chunk_bytes)
            self._tails[name] = (tail, MetricsLog())
        tail, log = self._tails[name]
        unposted = False
        while True:
            try:
                result = tail.read(into=log)
            except OSError as err:  # e.g. permissions, or a directory in its place
                yield from self._problem(f"{name}/metrics.jsonl: cannot read ({err.strerror})")
                return
            if result.missing:
                if name not in self._posted:
                    self._posted.add(name)
                    yield MetricsUpdated(name, None, f"{name}: no metrics.jsonl yet")
                return
            for bad in result.bad_lines:
                yield from self._problem(f"{name}/metrics.jsonl {bad}: skipped")
            unposted |= bool(result.count or result.reset or name not in self._posted)
            if unposted and (not result.more or result.reset or name not in self._posted
                             or self._post_due(name, log.lines)):
                self._posted.add(name)
                self._last_post[name] = (self.monotonic(), log.lines)
                unposted = False
                yield MetricsUpdated(name, log.curves())
            if not result.more:
                return

    def _post_due(self, name: str, lines: int) -> bool:
        when, posted_lines = self._last_post.get(name, (-math.inf, 0))
        return (self.monotonic() - when >= self.post_interval
                and lines >= POST_GROWTH * posted_lines)

    def _problem(self, text: str) -> Iterator[Message]:
        # Each distinct problem is reported once, not on every poll.
        if text not in self._problems_seen:
            self._problems_seen.add(text)
            yield ReadProblem(text)

    def _follow_log(self, name: str) -> Iterator[Message]:
        """New lines of the selected run's run.log (a new selection starts a new tail)."""
        if self._log is None or self._log[0] != name:
            self._log = (name, LogTail(self.runs_dir / name / "run.log"))
            chunk = self._log[1].read()
            yield LogUpdated(name, chunk.lines, reset=True, missing=chunk.missing)
            return
        chunk = self._log[1].read()
        if chunk.lines or chunk.reset:
            yield LogUpdated(name, chunk.lines, reset=chunk.reset, missing=chunk.missing)
