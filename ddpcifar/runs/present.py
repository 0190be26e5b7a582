"""How runs read in a list: the state label and number formats shared by `runs ls` and the
dashboard."""

from __future__ import annotations

from ddpcifar.runs import states
from ddpcifar.runs.reader import RunInfo


def state_label(r: RunInfo) -> str:
    """queued runs with their place (`queued #2`), launched ones not yet training as
    `starting`, remote ones with their host."""
    if r.state == states.QUEUED:
        return f"queued #{r.queue_position}" if r.queue_position else "starting"
    if r.state == states.REMOTE:
        return f"remote ({r.host})"
    return r.state


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f}%"


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 1h02m."""
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"
