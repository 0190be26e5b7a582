"""Ending a run from outside it: a sweep pruning a trial, a supervisor marking a run whose ranks
died, a cancelled queue entry. The state goes into status.json first, then the run's model card
is written again so that it says how the run ended (a card that fails is a warning line)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ddpcifar.runs import states
from ddpcifar.runs.rundir import METRICS, update_status


def end_run(run_dir: str | os.PathLike, state: str, error: str | None = None) -> dict[str, Any]:
    """Set an end state from outside the run; rewrite the card of a run that trained."""
    if state not in states.ENDED:
        raise ValueError(f"not an end state: {state}")
    status = update_status(run_dir, state=state, error=error)
    if (Path(run_dir) / METRICS).exists():
        from ddpcifar.card import write_card_quietly  # matplotlib only when a run ends

        write_card_quietly(run_dir)
    return status
