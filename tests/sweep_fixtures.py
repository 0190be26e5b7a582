"""A throwaway PostgreSQL server for the sweep tests, and a tiny sweep file writer.

PostgreSQL refuses to run as root: the cluster is made and run as the `postgres` user, in a
directory of its own under /tmp (pytest's tmp_path is private to root), on a free local port,
and removed afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(*argv: str) -> subprocess.CompletedProcess:
    cmd = argv if os.getuid() != 0 else ("su", "postgres", "-s", "/bin/sh", "-c",
                                         " ".join(f"'{a}'" for a in argv))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """postgresql://postgres@127.0.0.1:PORT/postgres of a server started for this session."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (launch/setup.sh installs it)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user (launch/setup.sh installs PostgreSQL)")
    root = Path(tempfile.mkdtemp(prefix="ddpcifar-pg-", dir="/tmp"))
    shutil.chown(root, "postgres") if os.getuid() == 0 else None
    data = root / "data"
    port = free_port()
    init = _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                        "postgres", "--no-sync")
    assert init.returncode == 0, init.stderr
    start = _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                         "-w", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
                                     "-c fsync=off", "start")
    assert start.returncode == 0, start.stderr + (root / "log").read_text()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def sweep_file(path: Path, spec: Path, **fields: Any) -> Path:
    """A small sweep over the tiny spec: lr on a log scale, 2 epochs, a 100-image split."""
    sweep: dict[str, Any] = {
        "name": path.stem,
        "base": {"spec": str(spec), "overrides": ["train.epochs=2"]},
        "space": {"optimizer.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}},
        "trials": 2,
        "validation": {"size": 100, "seed": 0},
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "heartbeat_s": 1,
    }
    sweep.update(fields)
    path.write_text(json.dumps(sweep, indent=1))
    return path
