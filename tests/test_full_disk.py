"""A full disk: the run ends failed with one line, its latest complete checkpoint loadable, and
once space is freed `--resume` finishes it with the weights of an uninterrupted run.

The run directory lives on a small tmpfs (mounted here as root, like CI; skipped where mounting
is not permitted). The run is stopped (SIGSTOP) once it has logged step 4, the tmpfs is filled,
and the run goes on:

- checkpoint: 256 KiB are left, so the metrics lines fit and the next checkpoint (about 1.4 MB)
  does not;
- metrics: nothing is left, and metrics.jsonl is padded with blank space to the end of its last
  page (tmpfs allocates whole pages), so its next line cannot be written. The run is stopped
  where that next write is a metrics line (not after a step that writes a checkpoint next); the
  padding lies past the last checkpoint's log size, so the resume cuts it.

Which step the run was stopped at does not matter to the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runs_fixtures import tiny_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prepared_data):
    """The spec and the final weights of an uninterrupted run of it (one process)."""
    from ddpcifar.train import main

    tmp = tmp_path_factory.mktemp("full_disk")
    spec = tiny_spec(tmp / "spec.json", prepared_data.data_dir, name="reference", epochs=2,
                     runs_dir=str(tmp / "runs"), checkpoint={"every_steps": 3})
    assert main([str(spec)]) == 0
    return spec, _weights(tmp / "runs" / "reference"), _lines(tmp / "runs" / "reference")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)["state_dict"]


def _lines(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.append({**{k: v for k, v in row.items() if k != "time"},
                    "values": {k: v for k, v in row["values"].items() if k != "images_per_s"}})
    return out


def _newest_step(run: Path) -> int:
    try:
        text = (run / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    steps = [0]
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") == "train":
            steps.append(row["step"])
    return max(steps)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("failing", ["checkpoint", "metrics"])
def test_full_disk_fails_in_one_line_and_resumes_exactly(small_disk, reference, failing):
    from ddpcifar.engine.checkpoint import load_latest
    from ddpcifar.train import main

    spec, weights, lines = reference
    runs = small_disk / "runs"
    args = [str(spec), "--set", f"logging.runs_dir={runs}", "--set", "logging.run_name=full"]
    run = runs / "full"
    proc = subprocess.Popen([sys.executable, "-m", "ddpcifar.train", *args], cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    filler = small_disk / "filler"
    try:
        deadline = time.monotonic() + 200
        after = 3
        while True:
            while _newest_step(run) <= after:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.02)
            proc.send_signal(signal.SIGSTOP)
            after = _newest_step(run)  # the run is stopped: this is its last line
            # Checkpoints come after the lines of steps 3, 6, 9, 10, ... and an epoch's end
            # writes best.pt before last.pt: stop again further on where the next write could
            # be another file than the one this case fills the disk for.
            if after % 10 and after < 18 and (failing == "checkpoint" or after % 3):
                break
            proc.send_signal(signal.SIGCONT)
        if failing == "metrics":
            with open(run / "metrics.jsonl", "ab") as fh:
                pad = -fh.tell() % 4096
                fh.write(b" " * (pad - 1) + b"\n" if pad else b"")
        free = os.statvfs(small_disk)
        size = free.f_bavail * free.f_frsize - (256 * 1024 if failing == "checkpoint" else 0)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=200)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 1, err
    assert err.startswith("error: no space left on the device writing ") and err.count("\n") == 1
    assert "--resume" in err and "Traceback" not in err
    wrote = run / "checkpoints" / "last.pt" if failing == "checkpoint" else run / "metrics.jsonl"
    assert f"writing {wrote};" in err, err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == err[len("error: "):].strip()
    state, path = load_latest(run / "checkpoints")  # the newest complete checkpoint loads
    assert 3 <= state["step"] < 20, path

    filler.unlink()
    assert main([*args, "--resume"]) == 0
    after = _weights(run)
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert _lines(run) == lines
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
