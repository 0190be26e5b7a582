"""`--resume auto` (and `logging.resume: "auto"`): the same command, submitted again, continues
the run directory when it holds a checkpoint, starts fresh in it when it does not, does nothing
once the run has finished, and refuses in one line a spec that changed outside `logging`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from runs_fixtures import tiny_spec


def _spec(tmp: Path, data_dir: Path) -> Path:
    """era_s9 on 320 images: 10 steps of 32 per epoch, a checkpoint every 4 steps."""
    return tiny_spec(tmp / "spec.json", data_dir, name="auto", epochs=2, runs_dir=str(tmp / "runs"),
                     data={"max_samples": 320}, train={"global_batch_size": 32},
                     checkpoint={"every_steps": 4})


def _train(spec: Path, *extra: str) -> int:
    from ddpcifar.train import main

    return main([str(spec), *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)["state_dict"]


def _lines(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{**{k: v for k, v in r.items() if k != "time"},
             "values": {k: v for k, v in r["values"].items() if k != "images_per_s"}}
            for r in rows]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prepared_data) -> Path:
    """A run started with --resume auto into an empty directory: it starts fresh and finishes."""
    tmp = tmp_path_factory.mktemp("auto")
    spec = _spec(tmp, prepared_data.data_dir)
    assert _train(spec, "--resume", "auto") == 0
    return tmp


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the finished run and a spec pointing at it (runs_dir is logging.*)."""
    shutil.copytree(finished / "runs", tmp_path / "runs")
    spec = json.loads((finished / "spec.json").read_text())
    spec["logging"]["runs_dir"] = str(tmp_path / "runs")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json", tmp_path / "runs" / "auto"


def test_auto_continues_an_interrupted_run_exactly(finished, tmp_path, capsys):
    spec, run = _copy(finished, tmp_path)
    reference, reference_lines = _weights(run), _lines(run)
    # As if killed after the step-16 checkpoint: last.pt is that one, the status still running.
    ckpts = run / "checkpoints"
    for suffix in ("", ".sha256"):
        os.replace(ckpts / f"prev.pt{suffix}", ckpts / f"last.pt{suffix}")
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running"}))
    capsys.readouterr()
    assert _train(spec, "--resume", "auto") == 0
    after = _weights(run)
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    assert _lines(run) == reference_lines
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_auto_leaves_a_finished_run_alone(finished, tmp_path, capsys):
    spec, run = _copy(finished, tmp_path)
    before = _snapshot(run)
    capsys.readouterr()
    assert _train(spec, "--resume", "auto") == 0
    assert f"{run} has finished; nothing to resume" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_auto_from_the_spec_starts_fresh_without_a_checkpoint(finished, tmp_path, capsys):
    """A crash before the first checkpoint left lines and a status: the spec's logging.resume
    alone (no flag) starts the run again in the same directory."""
    spec, run = _copy(finished, tmp_path)
    reference_lines = _lines(run)
    shutil.rmtree(run / "checkpoints")
    for name in ("summary.json", "MODEL_CARD.md"):
        (run / name).unlink(missing_ok=True)
    (run / "metrics.jsonl").write_text(json.dumps(
        {"kind": "train", "epoch": 0.1, "step": 1, "time": 1.0, "values": {"loss": 9.0}}) + "\n")
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running"}))
    assert _train(spec) == 2  # without auto, an existing run is refused
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert _train(spec, "--set", "logging.resume=auto") == 0
    assert _lines(run) == reference_lines
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_auto_refuses_a_changed_spec_in_one_line(finished, tmp_path, capsys):
    spec, run = _copy(finished, tmp_path)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running"}))
    before = _snapshot(run)
    capsys.readouterr()
    rc = _train(spec, "--resume", "auto", "--set", "optimizer.lr=0.2", "--set", "train.seed=5",
                "--set", "logging.progress=true")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: cannot resume: the spec differs from the checkpoint's in "
                          "optimizer.lr, train.seed; ")  # logging.* is not compared
    assert _snapshot(run) == before
