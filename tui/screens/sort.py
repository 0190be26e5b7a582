"""Choose what the run list is sorted by: any column or metric (ddpcifar.runs.select)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ddpcifar.runs.select import METRIC_KEYS, SORT_FIELDS

DESCRIPTIONS = {
    "name": "run name", "model": "model", "state": "state", "epoch": "epochs done",
    "queue": "queue position", "best_top1": "best test top-1", "last_top1": "latest test top-1",
    "top1_tta": "top-1 with test-time augmentation", "val_top1": "validation top-1",
    "images_per_s": "training images/s", "elapsed_s": "elapsed time",
    "final_loss": "final test loss", "final_top1": "final test top-1",
    "final_top5": "final test top-5", "wall_time_s": "wall time",
    "train_time_s": "training time", "time_to_accuracy_s": "time to accuracy (airbench's)",
}


class SortScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        keys = [*SORT_FIELDS, *METRIC_KEYS]
        with Vertical(id="sort-box"):
            yield Static("sort runs by (missing values last)", id="sort-title")
            yield OptionList(*(Option(f"{k:<20} {DESCRIPTIONS.get(k, '')}", id=k) for k in keys),
                             id="sort-options")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        keys = [*SORT_FIELDS, *METRIC_KEYS]
        if self.current in keys:
            options.highlighted = keys.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
