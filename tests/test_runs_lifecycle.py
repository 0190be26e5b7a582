"""The run lifecycle with real processes: `python -m ddpcifar.runs` launches detached runs
through torchrun (gloo, memory loader, tiny data), stops them with SIGTERM, resumes them, and
serves a queue; both engines write one summary schema; the package never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runs_fixtures import (ENV, ROOT, kill_leftovers, runs_cli, status, tiny_spec, train_steps,
                           wait_for, wait_state)

from ddpcifar.engine.checkpoint import load_checkpoint
from ddpcifar.runs.queue import busy_slots, queue_dir, read_queue
from ddpcifar.runs.report import SHARED_SUMMARY_KEYS


@pytest.fixture
def work(tmp_path):
    yield tmp_path
    leftovers = kill_leftovers(tmp_path / "runs")
    assert not leftovers, f"processes left running: {leftovers}"


def test_run_package_and_dashboard_load_without_torch():
    code = ("import sys\n"
            "import ddpcifar.runs.cli, ddpcifar.runs.control, ddpcifar.runs.supervise\n"
            "import ddpcifar.runs.report, ddpcifar.runs.stopping, ddpcifar.runs.select\n"
            "import ddpcifar.spec, tui.app, tui.run_form, tui.screens.new_run\n"
            "print(sorted(m for m in ('torch', 'ffcv', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["state_dict"]


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_and_resume_matches_an_uninterrupted_run(
        work, prepared_data):
    spec = tiny_spec(work / "tiny.json", prepared_data.data_dir, epochs=6)
    runs_cli("queue", "slots", "2", "--runs", "runs", cwd=work)
    runs_cli("launch", str(spec), "--nproc", "2", "--name", "whole", cwd=work)
    runs_cli("launch", str(spec), "--nproc", "2", "--name", "cut", "--tag", "cut", cwd=work)
    cut, whole = work / "runs" / "cut", work / "runs" / "whole"
    wait_for(lambda: train_steps(cut), what="cut's first step")
    out = runs_cli("stop", str(cut), "--wait", "120", cwd=work)
    assert "SIGTERM sent" in out.stdout and "is stopped" in out.stdout
    st = status(cut)
    assert st["state"] == "stopped" and "stopped by SIGTERM at step" in st["error"]
    stopped_at = max(train_steps(cut))
    assert stopped_at < 60, "the stop arrived before the run ended"
    state = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert state["step"] == stopped_at  # the checkpoint is of the step it stopped after
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["state"] == "stopped" and summary["steps"] == stopped_at

    refused = runs_cli("stop", str(cut), cwd=work, check=False)
    assert refused.returncode == 2 and refused.stderr == (
        "error: cannot stop cut: it is stopped (stop needs a run that is queued or running)\n")

    out = runs_cli("resume", str(cut), cwd=work)
    assert out.stdout.startswith("resumed cut (")
    assert "-m ddpcifar.train " + str(cut / "spec.json") + " --resume" in out.stdout
    for run in (cut, whole):
        assert wait_state(run, {"finished", "failed"})["state"] == "finished"
    steps = train_steps(cut)
    assert steps == sorted(set(steps)) == list(range(1, 61)), "every step logged once"
    a, b = weights(cut), weights(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (cut / "run.log").read_text()
    assert log.count("=== ") == 2 and log.count("--resume\n") == 1  # both attempts
    listed = json.loads(runs_cli("ls", "runs", "--tag", "cut", "--json", cwd=work).stdout)
    assert [(r["name"], r["state"]) for r in listed] == [("cut", "finished")]


@pytest.mark.slow
def test_three_queued_runs_with_one_slot_never_overlap(work, prepared_data):
    spec = tiny_spec(work / "tiny.json", prepared_data.data_dir, epochs=1)
    names = ["q1", "q2", "q3"]
    lines = [runs_cli("launch", str(spec), "--name", n, cwd=work).stdout for n in names]
    assert "queued at position" in lines[1] + lines[2]
    listing = runs_cli("queue", "--runs", "runs", cwd=work).stdout
    assert listing.startswith("runs: 1 of 1 slot(s) busy")
    runs = [work / "runs" / n for n in names]
    for run in runs:
        assert wait_state(run, {"finished", "failed"})["state"] == "finished"
    spans = []
    for run in runs:
        attempt = wait_for(lambda: _ended(run), 60, f"{run.name}'s supervisor done")
        spans.append((attempt["started"], attempt["ended"]))
    spans.sort()
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    assert [r.name for r in sorted(runs, key=lambda r: status(r)["started"])] == names  # FIFO
    # Nothing is left serving an empty queue, and no slot is held.
    wait_for(lambda: not busy_slots(work / "runs"), 30, "slots freed")
    assert read_queue(work / "runs").order == []
    from ddpcifar.runs.locks import is_flocked
    wait_for(lambda: not any(is_flocked(p) for p in queue_dir(work / "runs").glob("*.serve.lock")),
             30, "queue server gone")


def _ended(run: Path) -> dict | None:
    """The run's last attempt once its supervisor recorded the end (after the processes)."""
    attempt = json.loads((run / "launch.json").read_text())["attempts"][-1]
    return attempt if "ended" in attempt else None


def _types(summary: dict) -> dict[str, str]:
    return {k: type(summary[k]).__name__ for k in SHARED_SUMMARY_KEYS}


@pytest.mark.slow
def test_both_engines_write_every_shared_summary_key_with_the_same_types(work, prepared_data):
    torch_spec = tiny_spec(work / "t.json", prepared_data.data_dir, name="t", epochs=1)
    numpy_spec = tiny_spec(work / "n.json", prepared_data.data_dir, name="n", epochs=1,
                           model={"name": "scratch_cnn"},
                           data={"val_size": 100},  # a validation split: `val` filled in
                           scratch={"architecture": [
                               {"type": "conv", "out": 4, "kernel": 3, "stride": 2,
                                "padding": 1}, {"type": "relu"}, {"type": "maxpool", "size": 4},
                               {"type": "flatten"}, {"type": "linear", "out": 10}]})
    for spec in (torch_spec, numpy_spec):
        proc = subprocess.run([sys.executable, "-m", "ddpcifar.train", str(spec)], cwd=work,
                              env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    a = json.loads((work / "runs" / "t" / "summary.json").read_text())
    b = json.loads((work / "runs" / "n" / "summary.json").read_text())
    assert (a["engine"], b["engine"]) == ("torch", "numpy")
    for summary in (a, b):
        missing = set(SHARED_SUMMARY_KEYS) - set(summary)
        assert not missing, missing
        for key, allowed in SHARED_SUMMARY_KEYS.items():
            assert isinstance(summary[key], allowed), (summary["engine"], key, summary[key])
        assert {"train_s", "final_eval_s", "time_to_accuracy_s"} <= set(summary["timing"])
        assert summary["state"] == "finished" and summary["epochs_done"] == 1
    # The same type for every shared key, whichever engine (None only where both allow it).
    assert {k: v for k, v in _types(a).items() if k not in ("val",)} == \
        {k: v for k, v in _types(b).items() if k not in ("val",)}
    assert a["val"] is None and set(b["val"]) == {"epoch", "loss", "top1", "top3", "top5", "count"}
