"""What every benchmark record carries about where it ran: CPU or GPU, load, commit, command.

Stamped per record, not per file, so a file merged from several machines still says which
machine each figure came from (STYLE.md, "results carry their provenance").
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. 'AMD EPYC 7B13'), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The CPU model, its core count, Python, torch and (if one is visible) the GPU."""
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def commit() -> str | None:
    """HEAD's hash, with '+dirty' when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def this_command() -> str:
    """How this process was started, with paths under the repository shown relative to it."""
    argv = [sys.executable, *sys.argv]
    return " ".join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv)
