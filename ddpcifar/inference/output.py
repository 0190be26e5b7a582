"""Output files of predict and export: checked before the work starts, replaced atomically.

A path that cannot be written is refused up front (one line), so a long prediction or export
does not fail at its last step; a write that fails anyway leaves the old file, or none.
`StagedFiles` does the same for several files that belong together (an export and its JSON).
"""

from __future__ import annotations

import os
import tempfile
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


class StagedFiles:
    """Temporary files beside their targets, renamed into place together by `commit`; whatever
    is not committed is removed by `discard` (call it in a `finally`)."""

    def __init__(self, *targets: Path) -> None:
        self.targets = targets
        self.temps: list[Path] = []
        try:
            for target in targets:
                self.temps.append(_temp_beside(target))
        except UserError:
            self.discard()
            raise

    def temp(self, target: Path) -> Path:
        """Where `target`'s content is to be written before `commit`."""
        return self.temps[self.targets.index(target)]

    def write_text(self, target: Path, text: str) -> None:
        """Write `target`'s staged file; an OSError becomes one line."""
        try:
            self.temp(target).write_text(text, encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot write {target}: "
                            f"{(err.strerror or str(err)).lower()}") from None

    def commit(self) -> None:
        """fsync every file, make it readable as a new file would be, then rename each into
        place; a failure removes the targets already renamed."""
        umask = os.umask(0)
        os.umask(umask)
        done: list[Path] = []
        try:
            for temp in self.temps:
                with temp.open("rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(temp, 0o666 & ~umask)  # mkstemp's 0600 would hide a file meant to share
            for temp, target in zip(self.temps, self.targets):
                os.replace(temp, target)
                done.append(target)
        except OSError as err:
            for target in done:
                target.unlink(missing_ok=True)
            raise UserError(f"cannot write {self.targets[len(done)]}: "
                            f"{(err.strerror or str(err)).lower()}") from None

    def discard(self) -> None:
        for temp in self.temps:
            temp.unlink(missing_ok=True)


def _temp_beside(path: Path) -> Path:
    """An empty temporary file in `path`'s directory. The suffix stays last: some readers go by
    it (torch.export.load reads only files whose name ends in .pt2)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    except OSError as err:
        raise UserError(f"cannot write {path}: {(err.strerror or str(err)).lower()}") from None
    os.close(fd)
    return Path(name)
