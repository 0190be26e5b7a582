"""The `?` screen: every key binding in one place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# ddpcifar dashboard

Reads `{runs_dir}` (polled every {poll:g} s; nothing is ever written there).

| key | where | what |
|---|---|---|
| `↑` `↓` | run list | select a run |
| `space` | run list | mark / unmark a run for comparison |
| `c` | anywhere | compare: overlay the marked runs' curves |
| `/` | anywhere | filter the run list by name or model |
| `esc` | anywhere | back to the run list |
| `o` / `O` | anywhere | next sort column / reverse the sort |
| `1` `2` `3` `4` | anywhere | curves, samples, classes, details tab |
| `x` | curves | x axis: epoch or optimizer step |
| `s` / `S` | curves | more / less EMA smoothing |
| `←` `→` `↑` `↓` | samples | move between images |
| `pgup` `pgdn` `home` `end` | samples | page through the images |
| `t` / `T` | samples | filter by true class (next / previous) |
| `p` / `P` | samples | filter by predicted class (next / previous) |
| `f` | samples | clear the class filters |
| `z` | samples | small (16x16) or full-size (32x32) tiles |
| `[` / `]` | samples | previous / next evaluation |
| `enter` | samples | enlarge the image (`←` `→` step, `esc` close) |
| `?` | anywhere | this help |
| `q` | anywhere | quit |

Status **stale** means the status says *running* but its process is gone and it has
not been updated for a minute.
"""


class HelpScreen(ModalScreen[None]):
    """Key bindings as a table; any of escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, runs_dir: str, poll_interval: float) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.poll_interval = poll_interval

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP.format(runs_dir=self.runs_dir, poll=self.poll_interval))
