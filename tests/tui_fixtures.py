"""Deterministic run directories for the TUI tests and benchmark (format of docs/run_directory.md).

Files are written directly (not through RunDir) so that timestamps are fixed: snapshots must not
depend on when the test ran. `T0` is every fixture run's start; tests pass `clock=lambda: NOW`.
Also holds the Pilot helpers shared by the TUI tests (`make_app`, `wait_until`, `select_run`,
`sync`) and `tmux_capture`, which runs the real TUI in a detached tmux session.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from textual.pilot import Pilot

from ddpcifar.atomic import atomic_open, write_json
from tui.app import DashboardApp
from tui.widgets.run_table import RunTable

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]
T0 = 1763700000.0  # fixed "started" time of every fixture run
NOW = T0 + 3725.0  # the injected clock: 1h02m05s after T0
EPOCH_S = 30.0  # simulated wall time per epoch
STEPS_PER_EPOCH = 20
LOG_EVERY = 5
REPO = Path(__file__).resolve().parents[1]

# A palette per class so the synthetic images are recognisably different in the grid.
_PALETTE = np.array([[70, 130, 200], [200, 60, 50], [90, 170, 80], [230, 170, 60],
                     [140, 100, 60], [180, 120, 200], [60, 160, 150], [160, 80, 40],
                     [40, 70, 160], [120, 120, 120]], dtype=np.float64)


def accuracy_at(epoch: float, ceiling: float = 0.9) -> float:
    """The fixture's test accuracy curve: rises from 0.1 toward `ceiling`."""
    return 0.1 + (ceiling - 0.1) * (1 - math.exp(-epoch / 3))


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 32, 32, 3) uint8: a class-coloured background with a bright disc at a random spot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    out = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    for k, label in enumerate(labels.tolist()):
        base = _PALETTE[label % len(_PALETTE)]
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 9)
        shade = (0.55 + 0.45 * yy / 31)[..., None]
        img = base * shade
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[disc] = 255 - base * 0.3
        out[k] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return out


def eval_values(epoch: int, ceiling: float, seed: int) -> dict[str, Any]:
    """Eval-line values consistent with each other: per-class, confusion (1000 per class), top-k."""
    rng = np.random.default_rng(seed * 1000 + epoch)
    acc = accuracy_at(epoch, ceiling)
    per_class = np.clip(acc + rng.normal(0, 0.06, 10), 0.02, 0.99)
    confusion = np.zeros((10, 10), dtype=np.int64)
    for t in range(10):
        correct = int(round(per_class[t] * 1000))
        confusion[t, t] = correct
        wrong = rng.multinomial(1000 - correct, np.r_[np.ones(t), 0, np.ones(9 - t)] / 9)
        confusion[t] += wrong
    per_class = confusion.diagonal() / 1000.0
    top1 = float(per_class.mean())
    return {"loss": round(2.3 * (1 - top1) + 0.2, 4), "top1": round(top1, 4),
            "top3": round(min(1.0, top1 + 0.12), 4), "top5": round(min(1.0, top1 + 0.18), 4),
            "per_class": [round(float(v), 4) for v in per_class],
            "confusion": confusion.tolist(), "count": 10000,
            "train_loss": round(2.3 * (1 - top1) + 0.1, 4), "train_top1": round(top1 + 0.02, 4)}


def epoch_lines(epoch: int, epochs: int, ceiling: float, seed: int) -> list[dict[str, Any]]:
    """The metrics.jsonl lines one epoch produces: train lines every LOG_EVERY steps, then eval."""
    rng = np.random.default_rng(seed * 7 + epoch)
    lines: list[dict[str, Any]] = []
    total = epochs * STEPS_PER_EPOCH
    for k in range(LOG_EVERY, STEPS_PER_EPOCH + 1, LOG_EVERY):
        step = (epoch - 1) * STEPS_PER_EPOCH + k
        frac = step / STEPS_PER_EPOCH
        acc = accuracy_at(frac, ceiling) + 0.02 + float(rng.normal(0, 0.02))
        peak = 0.25 * total
        lr = 0.4 * (step / peak if step < peak else max(0.0, (total - step) / (total - peak)))
        lines.append({"kind": "train", "epoch": round(frac, 4), "step": step,
                      "time": round(frac * EPOCH_S, 3),
                      "values": {"loss": round(2.3 * (1 - acc) + 0.1 + float(rng.normal(0, 0.03)), 4),
                                 "top1": round(acc, 4), "lr": round(lr, 6),
                                 "images_per_s": 5000.0 + epoch}})
    lines.append({"kind": "eval", "epoch": epoch, "step": epoch * STEPS_PER_EPOCH,
                  "time": round(epoch * EPOCH_S + 2, 3), "values": eval_values(epoch, ceiling, seed)})
    return lines


def write_samples(run: Path, epoch: int, seed: int, n: int = 40) -> Path:
    """A samples/epoch_NNNN.npz of n misclassified images (pred != true, deterministic)."""
    rng = np.random.default_rng(seed * 31 + epoch)
    true = rng.integers(0, 10, n)
    pred = (true + rng.integers(1, 10, n)) % 10
    out = run / "samples" / f"epoch_{epoch:04d}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as fh:
        np.savez_compressed(fh, images=synthetic_images(true, seed * 31 + epoch),
                            true=true.astype(np.int64), pred=pred.astype(np.int64),
                            confidence=rng.uniform(0.3, 0.99, n).astype(np.float32),
                            index=np.sort(rng.choice(10000, n, replace=False)).astype(np.int64))
    return out


def status_for(name: str, model: str, *, state: str, epoch: int, epochs: int,
               best: float | None, last: float | None, pid: int, updated: float,
               error: str | None = None) -> dict[str, Any]:
    return {"format": 1, "name": name, "model": model, "engine": "torch", "state": state,
            "epoch": epoch, "epochs": epochs, "world_size": 2, "classes": CLASSES,
            "started": T0, "updated": updated, "pid": pid, "best_top1": best, "last_top1": last,
            "images_per_s": 5000.0 + epoch if epoch else None, "error": error}


def write_run(root: Path, name: str, *, model: str = "resnet8", epochs: int = 8,
              done: int = 8, state: str = "finished", ceiling: float = 0.9, seed: int = 0,
              pid: int | None = None, updated: float | None = None, error: str | None = None,
              samples: bool = True) -> Path:
    """One complete run directory with `done` epochs of metrics; a summary when finished."""
    run = root / name
    (run / "samples").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    write_json(run / "spec.json", {
        "model": {"name": model}, "data": {"batch_size": 512, "dataset": "cifar10"},
        "optim": {"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"epochs": epochs, "warmup_epochs": epochs // 4},
        "logging": {"runs_dir": str(root.name), "run_name": name, "log_every": LOG_EVERY}})
    lines: list[dict[str, Any]] = []
    for e in range(1, done + 1):
        lines += epoch_lines(e, epochs, ceiling, seed)
        if samples:
            write_samples(run, e, seed)
    with open(run / "metrics.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    evals = [line["values"] for line in lines if line["kind"] == "eval"]
    best = max((v["top1"] for v in evals), default=None)
    last = evals[-1]["top1"] if evals else None
    write_json(run / "status.json", status_for(
        name, model, state=state, epoch=done, epochs=epochs, best=best, last=last,
        pid=os.getpid() if pid is None else pid,
        updated=updated if updated is not None else T0 + done * EPOCH_S + 5, error=error))
    if state == "finished" and evals:
        best_i = int(np.argmin([v["loss"] for v in evals]))
        final = {k: evals[-1][k] for k in ("loss", "top1", "top3", "top5", "per_class", "confusion")}
        write_json(run / "summary.json", {
            "format": 1, "name": name, "model": model, "engine": "torch", "epochs": epochs,
            "world_size": 2, "classes": CLASSES, "wall_time_s": done * EPOCH_S + 5,
            "images_per_s": 5000.0 + done, "parameters": 78042,
            "best": {"epoch": best_i + 1, "loss": evals[best_i]["loss"],
                     "top1": evals[best_i]["top1"], "checkpoint": "checkpoints/best.pt"},
            "final": {"epoch": done, **final}})
    return run


def dead_pid() -> int:
    """The id of a process that has already exited (for a 'stale' run)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_fixture_runs(root: Path) -> dict[str, Path]:
    """Five runs: two finished, one running (this process's pid), one failed, one stale."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "resnet_long": write_run(root, "resnet_long", model="resnet8", epochs=8, done=8, seed=1),
        "era_short": write_run(root, "era_short", model="era_s9", epochs=6, done=6,
                               ceiling=0.8, seed=2),
        "era_live": write_run(root, "era_live", model="era_s9", epochs=10, done=3,
                              state="running", ceiling=0.85, seed=3, updated=NOW - 5),
        "broken": write_run(root, "broken", model="resnet8", epochs=8, done=1, state="failed",
                            seed=4, error="RuntimeError: NCCL timeout", samples=False),
        "ghost": write_run(root, "ghost", model="resnet8", epochs=8, done=2, state="running",
                           seed=5, pid=dead_pid(), updated=T0 + 65),
    }


def append_epoch(run: Path, epoch: int, *, epochs: int = 10, ceiling: float = 0.85,
                 seed: int = 3, samples: bool = True) -> dict[str, Any]:
    """Grow a running run by one epoch, as the trainer would: metrics, samples, then status."""
    lines = epoch_lines(epoch, epochs, ceiling, seed)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
    if samples:
        write_samples(run, epoch, seed)
    status = json.loads((run / "status.json").read_text())
    top1 = lines[-1]["values"]["top1"]
    status.update(epoch=epoch, last_top1=top1, best_top1=max(top1, status["best_top1"] or 0),
                  updated=status["updated"] + EPOCH_S, images_per_s=5000.0 + epoch)
    write_json(run / "status.json", status)
    return lines[-1]["values"]


# -- Pilot helpers ----------------------------------------------------------------------------


def sync(test: Callable[..., Any]) -> Callable[..., None]:
    """Run an async test body with asyncio.run (no pytest-asyncio in the environment)."""
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))
    return wrapper


def make_app(runs: Path) -> DashboardApp:
    """The dashboard on `runs` with a fast poll and the fixed clock NOW (snapshot-safe)."""
    return DashboardApp(runs, poll_interval=0.05, clock=lambda: NOW)


async def wait_until(pilot: Pilot, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until `check()` holds (the poll worker posts asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


async def select_run(pilot: Pilot, app: DashboardApp, name: str) -> None:
    """Move the run-list cursor to `name` once it is listed, and wait for the selection."""
    await wait_until(pilot, lambda: bool(app.screen_stack[0].query(RunTable)))  # composed
    t = app.screen_stack[0].query_one(RunTable)
    await wait_until(pilot, lambda: name in t.visible_names)
    t.move_cursor(row=t.visible_names.index(name))
    await wait_until(pilot, lambda: app.screen_stack[0].selected == name)


# -- a real terminal ---------------------------------------------------------------------------


def tmux_capture(runs_dir: Path, *, size: tuple[int, int] = (120, 40), wait_for: str = "",
                 timeout: float = 20.0, session: str | None = None,
                 keys: list[str] | None = None) -> str:
    """Run `python -m tui --runs DIR` in a detached tmux session and return the screen text.

    Polls `tmux capture-pane -p` until `wait_for` appears (or `timeout` passes), optionally sends
    `keys` first, then kills the session it started. Raises RuntimeError if tmux is missing.
    """
    tmux = shutil.which("tmux")
    if tmux is None:
        raise RuntimeError("tmux is not installed")
    session = session or f"tui-test-{os.getpid()}-{time.monotonic_ns()}"
    cmd = f"cd {REPO} && {sys.executable} -m tui --runs {runs_dir} --poll 0.2"
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", str(size[0]), "-y",
                    str(size[1]), cmd], check=True)
    try:
        text = ""
        deadline = time.monotonic() + timeout
        sent = False
        while time.monotonic() < deadline:
            text = subprocess.run([tmux, "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True).stdout
            if keys and not sent and "name" in text:  # the table is up: send the keys once
                subprocess.run([tmux, "send-keys", "-t", session, *keys], check=True)
                sent = True
                continue
            if wait_for in text and (sent or not keys):
                break
            time.sleep(0.2)
        return text
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
