"""Modal view of one misclassified image, enlarged, with its caption and test-set index."""

from __future__ import annotations

from typing import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.samples import Samples, caption
from tui.widgets.image_view import ImageView


class ImageScreen(ModalScreen[None]):
    """Left/right step through the (filtered) samples; Escape closes."""

    BINDINGS = [
        Binding("escape,q,enter", "dismiss", "close"),
        Binding("left", "step(-1)", "previous"),
        Binding("right", "step(1)", "next"),
    ]

    def __init__(self, samples: Samples, order: Sequence[int], position: int,
                 classes: Sequence[str]) -> None:
        super().__init__()
        self.samples = samples
        self.order = list(order)
        self.position = position
        self.class_names = tuple(classes)

    def compose(self) -> ComposeResult:
        with Vertical(id="image-box"):
            yield ImageView(self.samples.images[self.order[self.position]], id="image")
            yield Static("", id="image-caption")

    def on_mount(self) -> None:
        self._update()

    def _update(self) -> None:
        i = self.order[self.position]
        s = self.samples
        self.query_one(ImageView).set_image(s.images[i])
        text = caption(self.class_names, int(s.true[i]), int(s.pred[i]), float(s.confidence[i]))
        self.query_one("#image-caption", Static).update(
            f"{text}\ntest image #{int(s.index[i])} · sample {self.position + 1} of "
            f"{len(self.order)} · epoch {s.epoch}")
        self.query_one("#image-box").border_title = f"sample {self.position + 1}/{len(self.order)}"

    def action_step(self, delta: int) -> None:
        self.position = (self.position + delta) % len(self.order)
        self._update()
