"""Checkpoints: written atomically with a SHA-256 beside each, loaded only with weights_only=True.

`torch.load` happily loads a file with a flipped byte, so every checkpoint has a `.sha256`
sidecar that is checked before loading. `last.pt` is rotated to `prev.pt` before a new one is
written, so a kill at any moment leaves at least one complete, verifiable checkpoint, and a
write that a full disk refuses is a one-line `WriteFailed` (ddpcifar.runs.rundir).

Fault injection (tests and benchmarks/chaos.py; off unless set): with DDPCIFAR_FAULT_KILL_IN_WRITE
naming a file, the first checkpoint write that finds the file removes it, writes half its bytes
and SIGKILLs its own process, so a kill lands inside a write at a step the caller chose.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
from pathlib import Path
from typing import Any

import torch

from ddpcifar.atomic import atomic_open, write_bytes
from ddpcifar.errors import UserError
from ddpcifar.runs.rundir import writing

CHECKPOINT_KIND = "ddpcifar-checkpoint"
CHECKPOINT_FORMAT = 1
# torch.load(weights_only=True) is only a safe unpickler from 2.10 on (earlier releases had
# published bypasses that run code), so older versions are refused rather than trusted.
MIN_TORCH = (2, 10)
FAULT_KILL_IN_WRITE = "DDPCIFAR_FAULT_KILL_IN_WRITE"


def check_torch_version(version: str | None = None) -> None:
    """UserError unless `version` (default: the running torch's) is at least MIN_TORCH."""
    version = version or torch.__version__
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or tuple(int(g) for g in match.groups()) < MIN_TORCH:
        raise UserError(f"torch {version} is too old: ddpcifar needs torch >= "
                        f"{'.'.join(map(str, MIN_TORCH))}, whose weights_only=True checkpoint "
                        "loading has no known code-execution bypass (reinstall: launch/setup.sh)")


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> str:
    """Serialise `payload` and write it with its sidecar; returns the hex digest."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"kind": CHECKPOINT_KIND, "format": CHECKPOINT_FORMAT, **payload}, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    # Order matters for crash safety: the sidecar names the new digest before the data lands,
    # so a kill in between leaves a mismatch (refused, fall back) rather than a silent mix.
    with writing(path):
        write_bytes(_sidecar(path), f"{digest}  {path.name}\n".encode())
        with atomic_open(path, "wb") as fh:
            _injected_kill(fh, data)
            fh.write(data)
    return digest


def _injected_kill(fh: Any, data: bytes) -> None:
    """DDPCIFAR_FAULT_KILL_IN_WRITE (module docstring): die half-way through this write, once."""
    trigger = os.environ.get(FAULT_KILL_IN_WRITE)
    if not trigger:
        return
    try:
        os.unlink(trigger)  # consumed: the replayed write after the restart goes through
    except FileNotFoundError:
        return
    fh.write(data[: len(data) // 2])
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def rotate_and_save(directory: Path, name: str, payload: dict[str, Any]) -> Path:
    """Save `name`.pt, first moving the current one (and its sidecar) to prev.pt."""
    path = directory / f"{name}.pt"
    if path.exists() and _sidecar(path).exists():
        prev = directory / "prev.pt"
        os.replace(_sidecar(path), _sidecar(prev))
        os.replace(path, prev)
    save_checkpoint(path, payload)
    return path


def verify_checkpoint(path: str | os.PathLike) -> bytes:
    """Return the file's bytes if its SHA-256 matches the sidecar; UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise UserError(f"checkpoint {path} has no {sidecar.name}; refusing to load an "
                        "unverifiable checkpoint")
    expected = sidecar.read_text(errors="replace").split()[:1]
    actual = hashlib.sha256(data).hexdigest()
    if expected != [actual]:
        raise UserError(f"checkpoint {path} is corrupt or incomplete: sha256 {actual[:12]}... "
                        f"does not match {sidecar.name}")
    return data


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Load a ddpcifar checkpoint safely (weights_only=True: no code can run)."""
    path = Path(path)
    data = verify_checkpoint(path) if verify else _read(path)
    check_torch_version()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or damaged files
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load checkpoint {path}: {reason}") from None
    if not isinstance(obj, dict) or obj.get("kind") != CHECKPOINT_KIND:
        raise UserError(f"{path} is not a ddpcifar checkpoint")
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} has format {obj.get('format')!r}; this version reads "
                        f"format {CHECKPOINT_FORMAT}")
    return obj


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path.read_bytes()


def load_latest(directory: Path) -> tuple[dict[str, Any], Path]:
    """The newest verifiable training checkpoint: last.pt, else prev.pt; never silently none.

    A file passes if its SHA-256 is named by either sidecar: a kill between the two renames
    of `rotate_and_save` leaves last.pt intact but its digest already in prev.pt.sha256.
    """
    known = {side.read_text(errors="replace").split()[:1][0]
             for side in (_sidecar(directory / "last.pt"), _sidecar(directory / "prev.pt"))
             if side.is_file() and side.read_text(errors="replace").split()}
    errors = []
    for name in ("last.pt", "prev.pt"):
        path = directory / name
        if not path.exists():
            continue
        try:
            if hashlib.sha256(_read(path)).hexdigest() not in known:
                verify_checkpoint(path)  # raises the precise error (no sidecar, mismatch)
            return load_checkpoint(path, verify=False), path
        except UserError as err:
            errors.append(str(err))
    detail = "; ".join(errors) if errors else "no last.pt or prev.pt"
    raise UserError(f"cannot resume from {directory}: {detail}")
