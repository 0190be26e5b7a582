"""Reading runs without running them: derived states (lost, remote, a reused pid), stopping a
remote run says where to act, old summaries in the current schema, filters and sort keys."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tui_fixtures import dead_pid

from ddpcifar.atomic import write_json
from ddpcifar.errors import UserError
from ddpcifar.runs import control, states
from ddpcifar.runs.procs import ProcessRef, start_ticks, this_host
from ddpcifar.runs.reader import RunScanner, normalize_summary, read_run_dir
from ddpcifar.runs.rundir import new_status
from ddpcifar.runs.select import parse_query, select


def run(root: Path, name: str, *, state: str = "running", process: ProcessRef | None = None,
        **changes: object) -> Path:
    path = root / name
    path.mkdir(parents=True)
    status = new_status(name=name, model="era_s9", engine="torch", epochs=4, world_size=1,
                        classes=["a", "b"], state=state, process=process or ProcessRef.me())
    status.update(changes)
    write_json(path / "status.json", status)
    return path


def states_of(root: Path) -> dict[str, str]:
    return {r.name: r.state for r in RunScanner(root).scan(time.time()).runs}


def test_states_are_derived_from_processes_and_hosts(tmp_path):
    me = ProcessRef.me()
    run(tmp_path, "alive")
    run(tmp_path, "dead", process=ProcessRef(dead_pid(), this_host(), 1))
    # Our own pid with another start time: a reused pid, so not this run's process.
    run(tmp_path, "reused", process=ProcessRef(os.getpid(), this_host(), (me.start or 0) + 7))
    run(tmp_path, "elsewhere", process=ProcessRef(12345, "node7", 99))
    run(tmp_path, "done", state="finished", process=ProcessRef(dead_pid(), this_host(), 1))
    assert states_of(tmp_path) == {"alive": "running", "dead": "lost", "reused": "lost",
                                   "elsewhere": "remote", "done": "finished"}
    assert start_ticks(os.getpid()) == me.start


def test_stopping_a_remote_run_says_where_to_act(tmp_path):
    path = run(tmp_path, "elsewhere", process=ProcessRef(31337, "node7", 99))
    with pytest.raises(UserError) as err:
        control.stop(path)
    assert str(err.value) == (
        f"cannot stop elsewhere from here: it runs on host node7 (pid 31337); run "
        f"`python -m ddpcifar.runs stop {path}` on node7, or `kill -TERM 31337` there")
    assert json.loads((path / "status.json").read_text())["state"] == "running"  # unchanged


def test_actions_that_do_not_fit_the_state_are_refused(tmp_path):
    done = run(tmp_path, "done", state="finished")
    with pytest.raises(UserError, match="cannot resume done: it is finished"):
        control.resume(done)
    with pytest.raises(UserError, match="not a run directory"):
        read_run_dir(tmp_path / "nothing", time.time())
    numpy_run = run(tmp_path, "np", state="stopped", engine="numpy")
    with pytest.raises(UserError, match="the NumPy engine does not resume"):
        control.resume(numpy_run)


def test_format_one_summaries_load_in_the_current_schema():
    old_numpy = {"format": 1, "engine": "numpy", "train_time_s": 12.5, "val_top1": 0.61,
                 "final": {"epoch": 3, "top1": 0.6}}
    new = normalize_summary(old_numpy)
    assert new["state"] == "finished" and new["epochs_done"] == 3
    assert new["val"] == {"top1": 0.61} and "val_top1" not in new
    assert new["timing"]["time_to_accuracy_s"] == 12.5
    old_torch = {"format": 1, "engine": "torch", "final": {"epoch": 2}}
    assert normalize_summary(old_torch)["checkpoint"] == "checkpoints/last.pt"


def test_filters_and_sort_keys(tmp_path):
    for name, lr, tags, best in (("a", 0.1, ["x"], 0.5), ("b", 0.02, [], None),
                                 ("c", 0.05, ["x", "y"], 0.7)):
        path = run(tmp_path, name, state="finished", best_top1=best)
        write_json(path / "spec.json", {"optimizer": {"lr": lr}, "augment": {"kind": "basic"}})
        write_json(path / "tags.json", tags)
    runs = RunScanner(tmp_path).scan(time.time()).runs

    def names(query: str, sort: str = "name", reverse: bool = False) -> list[str]:
        return [r.name for r in select(runs, parse_query(query), sort, reverse)]

    assert names("optimizer.lr>=0.05") == ["a", "c"]
    assert names("tag:x tag:y") == ["c"]
    assert names("state:finished augment.kind=basic") == ["a", "b", "c"]
    assert names("", "best_top1", reverse=True) == ["c", "a", "b"]  # missing values last
    assert names("", "best_top1") == ["a", "c", "b"]
    with pytest.raises(UserError, match="bad condition 'optimizer.lr>x': > needs a number"):
        parse_query("optimizer.lr>x")
    assert {r.state for r in runs} == {states.FINISHED}
