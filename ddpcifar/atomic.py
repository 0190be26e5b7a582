"""Atomic file writes: a reader sees the old content or the new one, never a mix."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on clean exit fsync it and rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as pretty JSON, atomically."""
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text_or_print(text: str, path: str | os.PathLike | None) -> None:
    """Write `text` to `path` atomically, or to stdout when there is no path (a CLI's --out)."""
    if path is None:
        import sys

        sys.stdout.write(text)
        return
    with atomic_open(path, "w") as fh:
        fh.write(text)
