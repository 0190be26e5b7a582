"""Resume on another number of ranks: checkpointed on 2 ranks and resumed on 1, and the other
way round, with the same global batch, from the same step, and consuming the same global
order of samples as an uninterrupted run.

The order is read from `logging.sample_indices` (indices/rank<R>.jsonl: the split positions
each step trained on, per rank): at every step the positions of all ranks together must be
those of the uninterrupted one-process run. What cannot be the same across a change of world
size (each rank's augmentation stream, BatchNorm statistics per rank, the reduction order; see
docs/resilience.md) makes the weights differ, so they are not compared.

Each resume starts from a mid-epoch checkpoint (step 14 of 20: epoch 2 with 4 of its 10
steps done, running sums included): the run's own `prev.pt` after rolling the final
checkpoint back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddpcifar.runs.rundir import read_indices
from runs_fixtures import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def _torchrun(spec: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHELASTIC", "MASTER_"))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc-per-node=2", "-m",
                             "ddpcifar.train", str(spec), "--set", f"logging.run_name={name}",
                             *extra], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _train(spec: Path, name: str, *extra: str) -> int:
    from ddpcifar.train import main

    return main([str(spec), "--set", f"logging.run_name={name}", *extra])


def _roll_back(run: Path) -> None:
    """Drop the final checkpoint: prev.pt (step 14) becomes last.pt."""
    for suffix in ("", ".sha256"):
        os.replace(run / "checkpoints" / f"prev.pt{suffix}", run / "checkpoints" / f"last.pt{suffix}")


def _rank_steps(run: Path, rank: int) -> list[tuple[int, int]]:
    """(step, positions) per line of one rank's index file."""
    lines = (run / "indices" / f"rank{rank}.jsonl").read_text().splitlines()
    return [(row["step"], len(row["index"])) for row in map(json.loads, lines)]


def _train_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["kind"] == "train"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_resume_on_another_world_size_keeps_the_global_sample_order(tmp_path, prepared_data):
    # 1,000 images at global batch 100: 10 steps per epoch on 1 rank (100) and on 2 (2 x 50).
    spec = tiny_spec(tmp_path / "spec.json", prepared_data.data_dir, name="unset", epochs=2,
                     runs_dir=str(tmp_path / "runs"), checkpoint={"every_steps": 7},
                     logging={"sample_indices": True})
    runs = tmp_path / "runs"
    assert _train(spec, "one") == 0  # the uninterrupted order
    order = read_indices(runs / "one")
    assert sorted(order) == list(range(1, 21)) and all(len(v) == 100 for v in order.values())

    # 1 -> 2 (a copy of the one-process run, rolled back) beside a whole run on 2 ranks.
    shutil.copytree(runs / "one", runs / "one_two")
    _roll_back(runs / "one_two")
    procs = [_torchrun(spec, "one_two", "--resume"), _torchrun(spec, "two_one")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(outputs)

    # 2 -> 1: the two-rank run rolled back and finished in one process.
    assert read_indices(runs / "two_one") == order  # the order is world-size independent
    _roll_back(runs / "two_one")
    assert _train(spec, "two_one", "--resume") == 0

    for name, before, after in (("one_two", 1, 2), ("two_one", 2, 1)):
        run = runs / name
        assert read_indices(run) == order, f"{name}: another global order"
        assert _train_steps(run) == list(range(1, 21)), name
        # Steps 1-14 on the first world size, 15-20 on the second, each rank its share.
        per_rank = 100 // after
        for rank in range(max(before, after)):
            steps = _rank_steps(run, rank)
            first = [(s, 100 // before) for s in range(1, 15)] if rank < before else []
            then = [(s, per_rank) for s in range(15, 21)] if rank < after else []
            assert steps == first + then, (name, rank, steps)
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "finished" and status["world_size"] == after
