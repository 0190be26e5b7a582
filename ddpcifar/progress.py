"""Progress bars: data_prep.py's steps and download, and the training bar of both engines.

The one module that builds `rich.progress` bars. It imports neither torch nor rich itself: the
NumPy engine uses it, and a run without a bar need not load rich, so rich is imported when a bar
is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

# `start(description, total)` returns `advance(n)`: how the data readers report progress.
StartTask = Callable[[str, int], Callable[[int], None]]


def steps_progress(console: Console, *, disable: bool = False) -> Progress:
    """One bar per named step: description, done/total, elapsed and remaining time."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=disable, transient=False)


def download_progress(console: Console, *, disable: bool = False) -> Progress:
    """A download's bar: bytes so far, speed and remaining time."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    return Progress(TextColumn("downloading"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console, disable=disable)


def task_starter(progress: Progress) -> StartTask:
    """Adapt a rich Progress to the `start(description, total) -> advance(n)` callbacks."""
    def start(description: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda n: progress.advance(task, n)
    return start


class TrainingProgress:
    """The training bar on stderr: epoch, steps, loss, accuracy, images/s; messages print above."""

    def __init__(self, *, epochs: int, steps_per_epoch: int) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  "
                       "{task.fields[ips]:,.0f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._epochs = epochs
        self._task = self._progress.add_task("train", total=steps_per_epoch, epoch=0,
                                             epochs=epochs, loss=float("nan"), acc=0.0, ips=0.0)
        self._progress.start()

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        """Reset the bar for `epoch` (1-based) of `steps` steps, `done` of them already trained."""
        # reset() replaces all custom fields, so pass every one of them again.
        self._progress.reset(self._task, total=steps, completed=done, epoch=epoch,
                             epochs=self._epochs, loss=float("nan"), acc=0.0, ips=0.0)

    def advance(self, n: int = 1, **fields: float) -> None:
        """`n` more steps; `fields` (loss, acc, ips) replace the shown values."""
        self._progress.update(self._task, advance=n, **fields)

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


class NullProgress:
    """TrainingProgress's methods, doing nothing: ranks other than 0, or logging.progress off."""

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None: ...
    def advance(self, n: int = 1, **fields: float) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...
