"""A run's states, and which actions fit which state (docs/run_directory.md).

Stored in `status.json`: queued, running, stopped, finished, failed, pruned. Derived by readers,
never stored: `lost` (a running or launching run on this host whose processes are all gone)
and `remote` (a running run on another host, which this host cannot check).
"""

from __future__ import annotations

from ddpcifar.errors import UserError

QUEUED = "queued"  # waiting in its machine's queue for a slot
RUNNING = "running"
STOPPED = "stopped"  # ended on request (SIGTERM, `runs stop`, the dashboard), resumable
FINISHED = "finished"
FAILED = "failed"
PRUNED = "pruned"  # a sweep trial stopped early by the sweep's pruner
STORED = (QUEUED, RUNNING, STOPPED, FINISHED, FAILED, PRUNED)

LOST = "lost"
REMOTE = "remote"
DERIVED = (LOST, REMOTE)

ENDED = (STOPPED, FINISHED, FAILED, PRUNED)
# What each action accepts; the CLI and the dashboard both check through `require`.
ACCEPTS = {
    "stop": (QUEUED, RUNNING),
    "resume": (STOPPED, FAILED, LOST),
    "clone": (*STORED, *DERIVED),
    "cancel": (QUEUED,),
}


def require(action: str, state: str, run: str) -> None:
    """Raise a one-line UserError unless `action` fits a run in `state`."""
    allowed = ACCEPTS[action]
    if state not in allowed:
        raise UserError(f"cannot {action} {run}: it is {state} "
                        f"({action} needs a run that is {' or '.join(allowed)})")
