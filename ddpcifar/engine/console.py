"""Rank 0's console: a rich progress bar with loss, accuracy and images/s."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class ConsoleProgress:
    def __init__(self, *, epochs: int, steps_per_epoch: int) -> None:
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  "
                       "{task.fields[ips]:,.0f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._epochs = epochs
        self._task = self._progress.add_task("train", total=steps_per_epoch, epoch=0,
                                             epochs=epochs, loss=float("nan"), acc=0.0, ips=0.0)
        self._progress.start()

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        # reset() replaces all custom fields, so pass every one of them again.
        self._progress.reset(self._task, total=steps, completed=done, epoch=epoch,
                             epochs=self._epochs, loss=float("nan"), acc=0.0, ips=0.0)

    def advance(self, n: int = 1, **fields: float) -> None:
        self._progress.update(self._task, advance=n, **fields)

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


class NullProgress:
    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None: ...
    def advance(self, n: int = 1, **fields: float) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...
