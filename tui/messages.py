"""Typed messages that the polling worker posts to the dashboard (the worker never touches widgets)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui.metrics import Curves
from ddpcifar.runs.reader import RunInfo
from tui.samples import Samples


@dataclass
class RunsScanned(Message):
    """A fresh read of every run's status.json / summary.json."""

    runs: list[RunInfo]


@dataclass
class MetricsUpdated(Message):
    """New curves for one run; `curves` is None and `note` says why when there is no data."""

    run: str
    curves: Curves | None
    note: str | None = None


@dataclass
class SampleEpochsListed(Message):
    """The evaluations of `run` that have a misclassified-samples archive."""

    run: str
    epochs: list[int]


@dataclass
class SamplesLoaded(Message):
    """One samples archive read (or the one-line reason it could not be)."""

    run: str
    epoch: int
    samples: Samples | None
    error: str | None = None


@dataclass
class ReadProblem(Message):
    """Something in a run directory could not be read; shown as a notice, never a crash."""

    text: str


@dataclass
class DetailsLoaded(Message):
    """spec.json / summary.json of one run: pretty text for display, parsed summary for charts."""

    run: str
    spec_text: str | None
    summary_text: str | None
    summary: dict | None
    problems: list[str]


@dataclass
class LogUpdated(Message):
    """New lines of the selected run's log; `reset`: replace what is shown."""

    run: str
    lines: list[str]
    reset: bool = False
    missing: bool = False


@dataclass
class ActionDone(Message):
    """A lifecycle action (launch, stop, resume, clone, ...) ended: its one line, or its error."""

    line: str
    error: bool = False
    run: str | None = None  # the run it created or acted on, to select
