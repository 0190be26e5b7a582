"""Sweeps with real torchrun runs, tiny data and real storages (the journal file, a PostgreSQL
server): bad sweep files refused before anything is written, seeded sampling, pruning, two
workers per storage with every trial run once, and a SIGKILLed worker's trial retried."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from runs_fixtures import ENV, kill_leftovers, tiny_spec, train_steps, wait_for
from tui_fixtures import wait_until
from sweep_fixtures import postgres_url, sweep_file  # noqa: F401 - a fixture

from ddpcifar.runs.procs import ProcessRef
from ddpcifar.runs.reader import RunScanner


def sweep_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpcifar.sweep", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def work(tmp_path, prepared_data):
    tiny_spec(tmp_path / "tiny.json", prepared_data.data_dir, epochs=2)
    yield tmp_path
    leftovers = kill_leftovers(tmp_path / "runs")
    assert not leftovers, f"processes left running: {leftovers}"


def study_of(work: Path, name: str, storage: str | None = None) -> optuna.Study:
    from ddpcifar.sweep.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(
        storage, work / "runs" / name, 1))


BAD = [
    ({"nosuch": 1}, "invalid sweep {p}: nosuch: unknown key"),
    ({"space": {"optimizer.lrr": {"type": "float", "low": 0.1, "high": 1}}},
     "space.optimizer.lrr: not a field of the run spec"),
    ({"space": {"optimizer.momentum": {"type": "float", "low": 0.5, "high": 1.5}}},
     "space.optimizer.momentum: high=1.5 is refused by the run spec: optimizer.momentum: 1.5: "
     "Input should be less than 1"),
    ({"space": {"model.name": {"type": "categorical", "choices": ["era_s9", "nonet"]}}},
     "space.model.name: choice=\"nonet\" is refused by the run spec: model.name: \"nonet\": "
     "unknown model 'nonet'; allowed: era_s9, net5fc, vgg8bn, resnet9, airbench, scratch_cnn"),
    ({"space": {"optimizer.lr": {"type": "float", "low": 0.5, "high": 0.1}}},
     "invalid sweep {p}: space.optimizer.lr: low=0.5 is above high=0.1"),
    ({"space": {"optimizer.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
     "invalid sweep {p}: space.optimizer.lr: a log scale needs low > 0, got 0.0"),
    ({"validation": {"size": 0}},
     "invalid sweep {p}: objective.metric='val_top1' needs a validation split "
     "(validation.size > 0)"),
    ({"sampler": {"kind": "grid"}},
     "invalid sweep {p}: sampler.kind='grid' needs categorical choices for every parameter "
     "(ranged: optimizer.lr)"),
    ({"seeds": [1, 1]}, "invalid sweep {p}: seeds [1, 1] repeat a seed"),
    ({"space": {"train.seed": {"type": "int", "low": 0, "high": 3}}},
     "invalid sweep {p}: space.train.seed: the sweep sets this field itself (seeds: use "
     "`seeds`; validation: use `validation`)"),
    ({"base": {"spec": "missing.json"}}, "base.spec: spec file not found: {w}/missing.json"),
    ({"base": {"spec": "tiny.json", "overrides": ["train.global_batch_size=0"]}},
     "base: the spec does not validate: train.global_batch_size: 0: Input should be greater "
     "than or equal to 1"),
    ({"trials": 0}, "invalid sweep {p}: trials=0: Input should be greater than or equal to 1"),
    ({"ranks": 3}, "base: the spec does not validate: (spec): train.global_batch_size=100 is "
                   "not divisible by the world size 3 (allowed: a multiple of 3)"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_sweep_files_are_refused_in_one_line_and_nothing_is_written(work, change, message):
    path = sweep_file(work / "bad.json", work / "tiny.json")
    data = {**json.loads(path.read_text()), **change}
    if "base" in change and change["base"]["spec"] == "tiny.json":
        data["base"]["spec"] = str(work / "tiny.json")
    path.write_text(json.dumps(data))
    proc = sweep_cli("run", str(path), cwd=work)
    assert proc.returncode == 2
    assert proc.stderr == "error: " + message.format(p=path, w=work) + "\n"
    assert sorted(p.name for p in work.iterdir()) == ["bad.json", "tiny.json"]


def test_malformed_json_and_an_unreachable_database_are_refused(work):
    path = work / "bad.json"
    path.write_text("{\"name\": ")
    proc = sweep_cli("run", str(path), cwd=work)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: sweep {path} is not valid JSON")
    sweep_file(path, work / "tiny.json", storage="postgresql://nobody@127.0.0.1:1/none")
    proc = sweep_cli("run", str(path), cwd=work)
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: storage 'postgresql://nobody@127.0.0.1:1/none': cannot connect")
    assert not (work / "runs").exists()


def test_seeded_sampling_asks_for_the_same_parameters(work):
    path = sweep_file(work / "s.json", work / "tiny.json", trials=5,
                      sampler={"kind": "tpe", "seed": 5, "startup_trials": 2})
    first, again = (sweep_cli("run", str(path), "--dry-run", "3", cwd=work) for _ in range(2))
    other = sweep_cli("run", str(path), "--dry-run", "3", "--set", "sampler.seed=6", cwd=work)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and "optimizer" in first.stdout
    lrs = [json.loads(line.strip())["optimizer"]["lr"] for line in first.stdout.splitlines()
           if line.startswith("  {")]
    assert len(lrs) == 3 and len(set(lrs)) == 3
    assert other.stdout != first.stdout
    assert not (work / "runs").exists()  # a dry run writes nothing


def test_workers_and_continued_studies_never_repeat_random_draws(work):
    """Each trial's sampler is seeded by its number: two workers (or a sweep run again) ask for
    what one uninterrupted worker would, never the same draw twice."""
    from ddpcifar.sweep.config import check_against_spec, load_sweep
    from ddpcifar.sweep.worker import Worker

    def asked(worker: Worker, n: int) -> list[float]:
        out = []
        for _ in range(n):
            trial = worker._next_trial()
            out.append(trial.suggest_float("optimizer.lr", 0.01, 0.5, log=True))
            worker.study.tell(trial, 0.5)
        return out

    sweep = load_sweep(sweep_file(work / "d.json", work / "tiny.json", trials=6,
                                  sampler={"kind": "tpe", "seed": 3, "startup_trials": 6}))
    base = check_against_spec(sweep, work)
    one = asked(Worker(sweep, work / "one", base, work, say=lambda _: None), 6)
    first, second = (Worker(sweep, work / "two", base, work, say=lambda _: None)
                     for _ in range(2))
    two = asked(first, 3) + asked(second, 3)
    assert len(set(one)) == 6 and two == one


@pytest.mark.slow
def test_pruning_stops_a_real_run_early_and_marks_it_pruned(work):
    # Random sampling with seed 0 asks for lr 0.05 first, then 20: a diverging run whose
    # validation loss at epoch 1 is worse than the first trial's (the median of one).
    path = sweep_file(work / "p.json", work / "tiny.json", trials=2,
                      base={"spec": str(work / "tiny.json"), "overrides": ["train.epochs=4"]},
                      space={"optimizer.lr": {"type": "categorical", "choices": [20.0, 0.05]}},
                      objective={"metric": "val_loss"}, sampler={"kind": "random", "seed": 0},
                      pruner={"kind": "median", "startup_trials": 1, "warmup_epochs": 0})
    proc = sweep_cli("run", str(path), cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = study_of(work, "p")
    states = [t.state.name for t in study.get_trials()]
    assert [t.params["optimizer.lr"] for t in study.get_trials()] == [0.05, 20.0]
    assert states == ["COMPLETE", "PRUNED"], proc.stdout
    pruned = work / "runs" / "p" / "trial-0001"
    status = json.loads((pruned / "status.json").read_text())
    assert status["state"] == "pruned" and "pruned by the sweep after epoch" in status["error"]
    assert status["epoch"] < 4 and max(train_steps(pruned)) < 40
    # The dashboard's reader sees the trials one level down, in their states.
    runs = {r.name: r.state for r in RunScanner(work / "runs").scan(time.time()).runs}
    assert runs == {"p/trial-0000": "finished", "p/trial-0001": "pruned"}
    show = sweep_cli("show", str(work / "runs" / "p"), "--json", cwd=work)
    shown = json.loads(show.stdout)
    assert shown["best"] == 0 and [r["state"] for r in shown["trials"]] == ["complete", "pruned"]
    assert {Path(p).name for p in shown["plots"]} == {"history.png"}
    asyncio.run(_sweep_view(work))


async def _sweep_view(work: Path) -> None:
    """The dashboard's sweep view: trials sorted by the objective, the best marked, enter
    opens the trial's run in the run list."""
    from textual.widgets import DataTable, Static

    from tui.app import DashboardApp
    from tui.screens.sweep import SweepScreen

    app = DashboardApp(work / "runs", poll_interval=0.1, cwd=work)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.runs)
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen))
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        assert str(table.get_row_at(0)[0]) == "★ 0" and str(table.get_row_at(1)[1]) == "pruned"
        assert "1 complete, 1 pruned" in str(screen.query_one("#sweep-summary", Static).content)
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, SweepScreen))
        await wait_until(pilot, lambda: app.screen.selected == "p/trial-0001")


def _two_workers(work: Path, name: str, storage: str | None) -> optuna.Study:
    path = sweep_file(work / f"{name}.json", work / "tiny.json", trials=4, storage=storage)
    subprocess.run([sys.executable, "-m", "ddpcifar.runs", "queue", "slots", "2", "--runs",
                    "runs"], cwd=work, env=ENV, check=True, capture_output=True)
    proc = sweep_cli("run", str(path), "--workers", "2", cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[w1]" in proc.stdout and "[w2]" in proc.stdout
    study = study_of(work, name, storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # none lost, no overshoot
    runs = [t.user_attrs["runs"] for t in trials]
    assert sorted(Path(r[0]).name for r in runs) == [f"trial-000{k}" for k in range(4)]
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, "both workers ran trials"
    # Each trial ran once: one attempt in its launch record, one run directory per trial.
    for r in runs:
        launch = json.loads((Path(r[0]) / "launch.json").read_text())
        assert len(launch["attempts"]) == 1 and launch["attempts"][0]["exit_code"] == 0
    assert sorted(p.name for p in (work / "runs" / name).glob("trial-*")) == \
        [f"trial-000{k}" for k in range(4)]
    return study


@pytest.mark.slow
def test_two_workers_on_the_journal_file_run_every_trial_once(work):
    _two_workers(work, "journal2", None)


@pytest.mark.slow
def test_two_workers_on_postgresql_run_every_trial_once(work, postgres_url):
    _two_workers(work, "pg2", postgres_url)


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_and_nothing_is_left_running(work):
    path = sweep_file(work / "k.json", work / "tiny.json", trials=1,
                      base={"spec": str(work / "tiny.json"), "overrides": ["train.epochs=30"]})
    worker = subprocess.Popen([sys.executable, "-m", "ddpcifar.sweep", "run", str(path)],
                              cwd=work, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    first = work / "runs" / "k" / "trial-0000"
    wait_for(lambda: train_steps(first), 120, "trial 0 training")
    launch = json.loads((first / "launch.json").read_text())
    agent = ProcessRef.from_json(launch["agent"])
    rank0 = ProcessRef.from_json({"pid": json.loads((first / "status.json").read_text())["pid"]})
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # The trial's torchrun gets SIGTERM when its worker dies, and every rank stops.
    wait_for(lambda: not agent.alive() and not rank0.alive(), 60, "the trial's processes gone")
    shorter = ["--set", "base.overrides=[\"train.epochs=2\"]"]
    proc = sweep_cli("run", str(path), *shorter, "--set", "trials=1", cwd=work)
    assert proc.returncode == 2 and "with other settings (base)" in proc.stderr
    time.sleep(3.5)  # three heartbeats of 1 s: the dead worker's trial is stale now
    proc = sweep_cli("run", str(path), cwd=work, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trial 0: failed (its worker died); retried as trial 1" in proc.stdout
    study = study_of(work, "k")
    t0, t1 = study.get_trials()
    assert (t0.state.name, t1.state.name) == ("FAIL", "COMPLETE")
    assert t1.params == t0.params and t1.user_attrs["retry_of"] == 0
    kept = json.loads((first / "status.json").read_text())
    assert kept["state"] == "failed" and "retried as trial 1" in kept["error"]
    assert "worker-died" in json.loads((first / "tags.json").read_text())
    assert (work / "runs" / "k" / "trial-0001" / "summary.json").exists()
    assert not list((work / "runs" / "k" / "workers").iterdir())


@pytest.mark.parametrize("name", ["sweep_airbench94", "sweep_seeds", "sweep_small"])
def test_example_sweeps_validate_against_their_base_specs(name):
    from ddpcifar.sweep.config import check_against_spec, load_sweep

    root = Path(__file__).resolve().parents[1]
    sweep = load_sweep(root / "specs" / f"{name}.json")
    base = check_against_spec(sweep, root)
    assert base["eval"]["every"] == 1 and base["data"]["val_size"] == sweep.validation.size


def test_sweep_schema_file_is_current(tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "s.json"
    proc = sweep_cli("schema", "--out", str(out), cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == json.loads((root / "specs" / "sweep.schema.json").read_text())
