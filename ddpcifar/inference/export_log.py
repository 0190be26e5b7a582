"""`exports.json` in a run directory: every export of one of its checkpoints, oldest first.

A checkpoint lies in a run directory when its parent is `checkpoints/` under a directory with
`status.json`. The list is read, extended and replaced atomically under an exclusive `flock`
on the run directory itself (no lock file left behind; a training rank locks `.lock`, not the
directory), so two exports finishing together both land. The run directory's own writer
(ddpcifar.runs.rundir) never touches this file.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ddpcifar.atomic import write_json
from ddpcifar.errors import UserError

EXPORTS_FILE = "exports.json"


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory holding `checkpoint`, or None when it lies outside one."""
    parent = checkpoint.resolve().parent
    if parent.name == "checkpoints" and (parent.parent / "status.json").is_file():
        return parent.parent
    return None


def append_export(run_dir: Path, entry: dict[str, Any]) -> Path:
    """Add `entry` to `run_dir`/exports.json (created as a list when absent); returns its path."""
    path = run_dir / EXPORTS_FILE
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = read_exports(run_dir)
            entries.append(entry)
            write_json(path, entries)
        finally:
            os.close(fd)  # releases the lock
    except OSError as err:
        raise UserError(f"cannot record the export in {path}: "
                        f"{(err.strerror or str(err)).lower()}") from None
    return path


def read_exports(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded exports of `run_dir` ([] when none); a damaged file is one line."""
    path = run_dir / EXPORTS_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"corrupt {EXPORTS_FILE} ({err}): {path}") from None
    if not isinstance(entries, list):
        raise UserError(f"corrupt {EXPORTS_FILE} (not a list): {path}")
    return entries
