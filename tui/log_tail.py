"""Following a run's `run.log` (every rank's stdout and stderr) as it grows.

Only complete lines are returned; a progress bar's carriage-return redraws collapse to what the
last redraw left. Reading starts from the last `BACKLOG_BYTES` of a long log, so selecting a
run with hours of output costs one small read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

BACKLOG_BYTES = 64 * 1024


@dataclass
class LogChunk:
    lines: list[str] = field(default_factory=list)
    reset: bool = False  # the file was replaced or shrank: the lines start afresh
    missing: bool = False


class LogTail:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset: int | None = None
        self._partial = b""
        self._inode: int | None = None

    def read(self) -> LogChunk:
        chunk = LogChunk()
        try:
            fh = open(self.path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            chunk.missing = True
            return chunk
        with fh:
            st = os.fstat(fh.fileno())
            if self.offset is None or st.st_size < self.offset or st.st_ino != self._inode:
                chunk.reset = self.offset is not None
                self.offset = max(0, st.st_size - BACKLOG_BYTES)
                self._partial = b""
                if self.offset:  # skip the partial first line of the backlog
                    fh.seek(self.offset)
                    self.offset += len(fh.readline())
            self._inode = st.st_ino
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        complete, newline, self._partial = (self._partial + data).rpartition(b"\n")
        if not newline:
            self._partial = complete + self._partial
            return chunk
        for raw in complete.decode("utf-8", "replace").split("\n"):
            line = raw.rsplit("\r", 1)[-1].rstrip()
            if line:
                chunk.lines.append(line)
        return chunk
