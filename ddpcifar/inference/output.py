"""Output files of predict and export: checked before the work starts, replaced atomically.

A path that cannot be written is refused up front (one line), so a long prediction or export
does not fail at its last step; a write that fails anyway leaves the old file, or none.
"""

from __future__ import annotations

import os
from pathlib import Path

from ddpcifar.atomic import atomic_open
from ddpcifar.errors import UserError


def check_writable(path: Path) -> None:
    """UserError unless a file can be created or replaced at `path`."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    parent = path.parent
    if not parent.is_dir():
        why = f"{parent} is not a directory" if parent.exists() else f"directory {parent} does not exist"
        raise UserError(f"cannot write {path}: {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: directory {parent} is not writable")


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically; an OSError becomes one line."""
    try:
        with atomic_open(path, "w") as fh:
            fh.write(text)
    except OSError as err:
        raise UserError(f"cannot write {path}: {(err.strerror or str(err)).lower()}") from None
