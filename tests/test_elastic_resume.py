"""Elastic fault tolerance: kills, restarts, interrupted checkpoint writes and hung ranks.

- A worker SIGKILLed mid-epoch under `torchrun --max-restarts=1` restarts the group, which
  resumes from checkpoints/last.pt and ends bitwise equal to an uninterrupted run, with the
  same metrics.jsonl (no duplicated or missing lines).
- A checkpoint write cut short leaves the previous checkpoint in use; a resume never silently
  starts again from step 0.
- A rank that stops answering (SIGSTOP) becomes a clear error after `distributed.timeout_s`.

Augmentation stays on (`basic`) in the kill test: the memory backend draws it from a generator
seeded by (seed, epoch, rank), so a replayed epoch is the same epoch. FFCV's augmentations
draw from an unseedable RNG, so with data.loader='ffcv' a resume is only statistically equal.
A resume redoes the work since the latest checkpoint: at most `checkpoint.every_epochs`
epochs, or `checkpoint.every_steps` steps when that is set (a mid-epoch checkpoint; the resumed
epoch skips the batches already trained by replaying its seeded order).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def write_spec(path: Path, data_dir: Path, runs_dir: Path, *, epochs: int = 3,
               timeout_s: float = 300.0, every_steps: int | None = None) -> Path:
    """era_s9 (the smallest model) on 320 images: 10 steps per epoch at world size 2."""
    spec = {
        "data": {"dir": str(data_dir), "loader": "memory", "num_workers": 0, "max_samples": 320},
        "model": {"name": "era_s9"},
        "augment": {"kind": "basic", "translate": 2, "cutout": 4},
        "train": {"epochs": epochs, "global_batch_size": 32, "seed": 11, "log_every": 1,
                  "deterministic": True},
        "eval": {"batch_size": 100, "max_samples": 10},
        "checkpoint": {"every_epochs": 1, "every_steps": every_steps},
        "distributed": {"timeout_s": timeout_s},
        "logging": {"runs_dir": str(runs_dir), "run_name": "unset", "progress": True,
                    "tensorboard": False},
    }
    path.write_text(json.dumps(spec))
    return path


def launch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC", "MASTER_"))}
    # RANKS_FILTER= : every local rank's output reaches the console (the launch scripts show
    # only local rank 0's by default), so a failure shows the rank that failed.
    # PYTHONFAULTHANDLER: a worker killed by SIGABRT/SIGSEGV prints every thread's Python stack.
    env.update({"TORCHRUN": str(TORCHRUN), "OMP_NUM_THREADS": "1", "NPROC": "2",
                "RANKS_FILTER": "", "PYTHONFAULTHANDLER": "1", **extra})
    return env


def flat(text: str) -> str:
    """Console text without whitespace: rich wraps long lines (paths) at 80 columns in a pipe."""
    return re.sub(r"\s+", "", text)


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def comparable(lines: list[dict]) -> list[dict]:
    """Metrics without the fields that measure wall time (`time`, `images_per_s`)."""
    out = []
    for line in lines:
        values = {k: v for k, v in line["values"].items() if k != "images_per_s"}
        out.append({"kind": line["kind"], "epoch": line["epoch"], "step": line["step"],
                    "values": values})
    return out


def worker_with_rank(agent: psutil.Process, rank: int) -> psutil.Process | None:
    """The worker process torchrun started for global `rank` (read from its environment)."""
    for child in agent.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "ddpcifar.train" in " ".join(child.cmdline()):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def wait_for(predicate, proc: subprocess.Popen, what: str, limit_s: float = 240.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def logged_step(run_dir: Path, step: int) -> bool:
    """A checkpoint exists and the train line of `step` is in metrics.jsonl."""
    if not (run_dir / "checkpoints" / "last.pt.sha256").exists():
        return False
    try:
        lines = metric_lines(run_dir)
    except (FileNotFoundError, json.JSONDecodeError):  # a half-written last line
        return False
    return any(l["kind"] == "train" and l["step"] >= step for l in lines)


def in_second_epoch(run_dir: Path) -> bool:
    """First checkpoint written and a train line of epoch 2 logged: a kill lands mid-epoch."""
    return logged_step(run_dir, 12)


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_sigkill_mid_epoch_restarts_and_matches_uninterrupted_run(tmp_path, prepared_data):
    runs = tmp_path / "runs"
    # Checkpoints every 4 steps too (10 steps per epoch): the kill below comes just after the
    # step-12 checkpoint, so the restart resumes inside epoch 2 and skips its first 2 batches.
    spec = write_spec(tmp_path / "spec.json", prepared_data.data_dir, runs, every_steps=4)
    standalone = str(LAUNCH / "standalone.sh")

    # The uninterrupted reference runs alongside (start-up dominates on a small machine).
    reference = subprocess.Popen(
        [standalone, str(spec), "--set", "logging.run_name=reference"],
        env=launch_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = subprocess.Popen(
        [standalone, "--max-restarts=1", "--", str(spec), "--set", "logging.run_name=killed"],
        env=launch_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: logged_step(runs / "killed", 13), killed, "step 13")
        # Rank 0 is the harder victim: it is the one writing metrics.jsonl and checkpoints.
        victim = worker_with_rank(psutil.Process(killed.pid), 0)
        assert victim is not None, "no rank-0 worker found under torchrun"
        lines_at_kill = len(metric_lines(runs / "killed"))
        victim.send_signal(signal.SIGKILL)
        output = killed.communicate(timeout=400)[0]
        reference_output = reference.communicate(timeout=400)[0]
    finally:
        killed.kill()
        reference.kill()
    assert killed.returncode == 0, output
    assert "failed (exitcode: -9) local_rank: 0" in output  # torchrun saw the kill ...
    # ... and restarted the group, which resumed from a mid-epoch checkpoint (step 12, or
    # step 16 if the victim got that far before the signal landed).
    assert "resumingfrom" in flat(output)
    assert re.search(r"checkpoints/last.pt\(epoch1,step(12|16)\)", flat(output)), output[-3000:]

    assert reference.returncode == 0, reference_output

    a, b = final_state(runs / "reference"), final_state(runs / "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after the restart"

    lines = metric_lines(runs / "killed")
    assert len(lines) < lines_at_kill + 40  # sanity: the file was cut back, not doubled
    train_steps = [l["step"] for l in lines if l["kind"] == "train"]
    assert train_steps == list(range(1, 31)), "train lines must be complete and not repeated"
    assert [l["epoch"] for l in lines if l["kind"] == "eval"] == [1, 2, 3]
    assert comparable(lines) == comparable(metric_lines(runs / "reference"))

    status = json.loads((runs / "killed" / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 3
    summary = json.loads((runs / "killed" / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["final"]["epoch"] == 3


# ------------------------------------------------------------------ interrupted checkpoint writes


def test_mid_epoch_checkpoint_resumes_exactly(tmp_path, capsys, prepared_data):
    """checkpoint.every_steps: a resume from inside an epoch equals the uninterrupted run."""
    from ddpcifar.train import main

    spec = write_spec(tmp_path / "spec.json", prepared_data.data_dir, tmp_path / "runs",
                      epochs=2, every_steps=7)
    args = [str(spec), "--set", "logging.run_name=steps", "--set", "train.global_batch_size=32"]
    assert main(args) == 0
    run = tmp_path / "runs" / "steps"
    reference, reference_lines = final_state(run), metric_lines(run)
    # Checkpoints at steps 7, 10 (epoch 1), 14, 20 (epoch 2): prev.pt is the step-14 one.
    prev = torch.load(run / "checkpoints" / "prev.pt", map_location="cpu", weights_only=True)
    assert (prev["epoch"], prev["step"]) == (1, 14) and prev["partial"] is not None
    (run / "checkpoints" / "last.pt").write_bytes(b"cut short")
    capsys.readouterr()

    assert main([*args, "--resume"]) == 0
    assert "checkpoints/prev.pt(epoch1,step14)" in flat(capsys.readouterr().err)
    after = final_state(run)
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    # Identical lines, including the epoch-2 train loss summed across the restart.
    assert comparable(metric_lines(run)) == comparable(reference_lines)
    assert [l["step"] for l in metric_lines(run) if l["kind"] == "train"] == list(range(1, 21))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, prepared_data) -> Path:
    """A finished 2-epoch single-process run (last.pt = epoch 2, prev.pt = epoch 1)."""
    from ddpcifar.train import main

    tmp = tmp_path_factory.mktemp("finished")
    spec = write_spec(tmp / "spec.json", prepared_data.data_dir, tmp / "runs", epochs=2)
    rc = main([str(spec), "--set", "logging.run_name=done", "--set", "logging.progress=false",
               "--set", "train.global_batch_size=16"])
    assert rc == 0
    return tmp


def _copy_run(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(finished_run / "runs", tmp_path / "runs")
    spec = write_spec(tmp_path / "spec.json", *_spec_dirs(finished_run, tmp_path), epochs=2)
    return spec, tmp_path / "runs" / "done"


def _spec_dirs(finished_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    data_dir = Path(json.loads((finished_run / "spec.json").read_text())["data"]["dir"])
    return data_dir, tmp_path / "runs"


def _resume(spec: Path, capsys) -> tuple[int, str]:
    from ddpcifar.train import main

    rc = main([str(spec), "--resume", "--set", "logging.run_name=done", "--set",
               "train.global_batch_size=16"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "sidecar_mismatch", "sidecar_missing"])
def test_damaged_last_checkpoint_falls_back_to_prev(finished_run, tmp_path, capsys, damage):
    from ddpcifar.engine.checkpoint import load_latest

    spec, run = _copy_run(finished_run, tmp_path)
    ckpts = run / "checkpoints"
    reference = final_state(run)
    if damage == "truncated":  # a write that was not atomic, or a disk that filled up
        data = (ckpts / "last.pt").read_bytes()
        (ckpts / "last.pt").write_bytes(data[: len(data) // 2])
    elif damage == "sidecar_mismatch":  # the new sidecar landed, the data did not
        (ckpts / "last.pt.sha256").write_text("0" * 64 + "  last.pt\n")
    else:
        (ckpts / "last.pt.sha256").unlink()

    state, path = load_latest(ckpts)
    assert path.name == "prev.pt" and state["epoch"] == 1 and state["step"] == 20

    rc, err = _resume(spec, capsys)
    assert rc == 0, err
    assert "resumingfrom" in flat(err) and "checkpoints/prev.pt(epoch1,step20)" in flat(err)
    lines = metric_lines(run)
    assert [l["step"] for l in lines if l["kind"] == "train"] == list(range(1, 41))
    assert [l["epoch"] for l in lines if l["kind"] == "eval"] == [1, 2]
    # Epoch 2 was trained again from prev.pt: a single process is deterministic, so the
    # replayed weights equal the ones the damaged file held.
    after = final_state(run)
    assert all(torch.equal(reference[k], after[k]) for k in reference)


def test_kill_between_rotation_renames_keeps_last(finished_run, tmp_path, capsys):
    """rotate_and_save moves last's sidecar, then last.pt: a kill in between must not lose both."""
    from ddpcifar.engine.checkpoint import load_latest

    spec, run = _copy_run(finished_run, tmp_path)
    ckpts = run / "checkpoints"
    os.replace(ckpts / "last.pt.sha256", ckpts / "prev.pt.sha256")
    state, path = load_latest(ckpts)
    assert path.name == "last.pt" and state["epoch"] == 2
    rc, err = _resume(spec, capsys)
    assert rc == 0, err
    assert "checkpoints/last.pt(epoch2,step40)" in flat(err)


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(finished_run, tmp_path, capsys):
    spec, run = _copy_run(finished_run, tmp_path)
    for name in ("last.pt", "prev.pt"):
        path = run / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:100])
    before = (run / "metrics.jsonl").read_bytes()
    rc, err = _resume(spec, capsys)
    assert rc == 2
    assert err.startswith(f"error: cannot resume from {run / 'checkpoints'}: checkpoint ")
    assert "is corrupt or incomplete" in err and err.count("\n") == 1
    assert (run / "metrics.jsonl").read_bytes() == before  # nothing replayed, nothing cut


def test_elastic_restart_without_any_checkpoint_fails_loudly(finished_run, tmp_path, capsys,
                                                             monkeypatch):
    """TORCHELASTIC_RESTART_COUNT>0 with damaged checkpoints: an error, never step 0."""
    spec, run = _copy_run(finished_run, tmp_path)
    for name in ("last.pt", "prev.pt"):
        (run / "checkpoints" / f"{name}.sha256").unlink()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    from ddpcifar.train import main

    rc = main([str(spec), "--set", "logging.run_name=done", "--set", "train.global_batch_size=16"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "has no last.pt.sha256; refusing to load an unverifiable checkpoint" in err


def test_restart_before_the_first_checkpoint_starts_clean(tmp_path, capsys, prepared_data,
                                                          monkeypatch):
    """An attempt that died before its first checkpoint left lines behind: the restarted run
    begins again from step 0 (nothing to resume) and must not keep them."""
    from ddpcifar.train import main

    spec = write_spec(tmp_path / "spec.json", prepared_data.data_dir, tmp_path / "runs", epochs=1)
    run = tmp_path / "runs" / "early"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "running"}')
    stale = {"kind": "train", "epoch": 0.1, "step": 1, "time": 1.0, "values": {"loss": 9.0}}
    (run / "metrics.jsonl").write_text(json.dumps(stale) + "\n" + '{"kind": "tra')
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main([str(spec), "--set", "logging.run_name=early"]) == 0
    lines = metric_lines(run)
    assert [l["step"] for l in lines if l["kind"] == "train"] == list(range(1, 11))
    assert all(l["values"].get("loss") != 9.0 for l in lines)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


# ------------------------------------------------------------------ a rank that stops answering


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stopped_rank_becomes_a_timeout_error(tmp_path, prepared_data):
    runs = tmp_path / "runs"
    spec = write_spec(tmp_path / "spec.json", prepared_data.data_dir, runs, epochs=3,
                      timeout_s=10)
    run = subprocess.Popen(
        [str(LAUNCH / "standalone.sh"), str(spec), "--set", "logging.run_name=hang"],
        env=launch_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(run.stdout.readline, "")),
                              daemon=True)
    reader.start()
    expected = "error: rank 0: no answer from the other ranks within distributed.timeout_s=10s"
    victim = None
    try:
        wait_for(lambda: in_second_epoch(runs / "hang"), run, "the second epoch")
        victim = worker_with_rank(psutil.Process(run.pid), 1)
        assert victim is not None
        victim.send_signal(signal.SIGSTOP)  # alive but silent: the worst kind of failure
        stopped_at = time.monotonic()
        wait_for(lambda: any(expected in line for line in lines), run, "the timeout error", 200)
        took = time.monotonic() - stopped_at
        # Let the stopped rank see torchrun's SIGTERM now instead of after its 30 s grace.
        victim.send_signal(signal.SIGCONT)
        run.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if victim is not None and victim.is_running():
            victim.send_signal(signal.SIGCONT)
        run.kill()
    output = "".join(lines)
    assert run.returncode != 0
    # Rank 0 reports the timeout as one line naming the setting, and no traceback of its own.
    assert f"{expected} (a rank died, hung or was stopped); the run stopped here, continue it " \
           "with --resume\n" in output
    assert "[rank0]: Traceback" not in output
    status = json.loads((runs / "hang" / "status.json").read_text())
    assert status["state"] == "failed" and "distributed.timeout_s=10s" in status["error"]
    # Bounded: the 10 s timeout plus generous slack for a loaded 2-core machine (never a hang).
    assert took < 10 + 90
