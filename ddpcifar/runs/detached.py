"""Starting processes that outlive whoever started them (the CLI, the dashboard, an SSH session).

A detached process gets its own session (no controlling terminal: a closed SSH connection's
SIGHUP never reaches it), /dev/null as stdin and a log file as stdout and stderr. Its parent
reaps it from a daemon thread, so a long-lived parent (the dashboard, the queue server) leaves
no zombies, and a short-lived one (the CLI) simply hands it over to init.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def spawn(argv: Sequence[str], *, log: str | os.PathLike | None, cwd: str | os.PathLike | None = None,
          env: dict[str, str] | None = None, pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """Start `argv` detached; its output is appended to `log` (None: discarded)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=tuple(pass_fds))
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{proc.pid}").start()
    return proc


def repo_env() -> dict[str, str]:
    """This environment, with the repository on PYTHONPATH so `-m ddpcifar...` resolves from
    any working directory (an editable install does this too; a plain checkout does not)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env
