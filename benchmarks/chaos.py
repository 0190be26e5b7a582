"""Chaos soak: one training run under `torchrun --max-restarts=K` while faults are injected.

A driver, from a seeded generator, picks K steps of the run and a fault for each, and injects
it once the running attempt has logged that train step (it follows metrics.jsonl, so faults are
placed by step, never by a guessed sleep):

  kill_rank      SIGKILL a rank
  kill_worker    SIGKILL one of a rank's loader worker processes (the albumentations recipe
                 with data.num_workers > 0 has them)
  kill_in_write  kill rank 0 inside a checkpoint write: the driver creates the trigger file
                 named by DDPCIFAR_FAULT_KILL_IN_WRITE (ddpcifar/engine/checkpoint.py), and the
                 next checkpoint write removes it, writes half its bytes and SIGKILLs itself
  freeze         SIGSTOP a rank until another rank gives up on it (distributed.timeout_s), then
                 SIGCONT it so that it takes torchrun's SIGTERM at once

Each fault must cost exactly one restart. At the end the run must have exited 0 with final
weights `torch.equal` to an uninterrupted run's, `metrics.jsonl` equal except the timing fields
(`time`, `images_per_s`), every train line an uninterrupted run writes logged once, no process
left behind and no temporary file or lock in the run directory. It reports the faults, restarts,
steps replayed (trained again after a restart) and the time lost against the uninterrupted run,
as JSON (one record, with the commit, the command, the CPU model and the load average) and as a
table.

    python benchmarks/chaos.py specs/era_s9.json --nproc 2 --faults 20 --seed 0 \\
        --timeout-s 20 --set train.epochs=2 --set checkpoint.every_steps=10 \\
        --out benchmarks/results/chaos_era_s9.json

The uninterrupted run goes first (its wall time is the baseline); `--concurrent-reference` runs
it beside the chaos run instead (faster, but then the time lost means nothing). The runs go to
a temporary directory unless `--runs-dir` is given. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/provenance.py, also when imported
from provenance import commit, cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("kill_rank", "kill_worker", "kill_in_write", "freeze")
FAULT_ENV = "DDPCIFAR_FAULT_KILL_IN_WRITE"  # ddpcifar.engine.checkpoint.FAULT_KILL_IN_WRITE
WAIT_S = 900.0  # the longest any one wait may take before the driver gives up (a hang)


class ChaosError(RuntimeError):
    """The run did something a fault cannot explain (ended early, hung)."""


@dataclass
class Fault:
    kind: str
    step: int  # injected once the running attempt has logged this train step
    rank: int
    injected_at_step: int | None = None  # the newest train step logged when it was injected
    pid: int | None = None
    last_step: int | None = None  # the newest train step the attempt had logged when it ended
    resumed_from: int | None = None  # the step of the checkpoint the next attempt resumed from
    restart_s: float | None = None  # from injection to the next attempt's ranks all running
    skipped: str | None = None  # why it could not be injected (the run ended first)


@dataclass
class Launch:
    """One torchrun process and what the driver saw of it.

    A watcher thread samples torchrun's children every 50 ms: every rank process (restarts are
    counted from them, so a restart the driver did not cause is counted too) and every loader
    worker, which must all be gone at the end.
    """

    proc: subprocess.Popen
    started: float
    log: Path
    attempts: list[dict[int, int]] = field(default_factory=list)  # rank -> pid, per attempt
    rank_pids: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)  # every rank and loader-worker pid
    ended: float | None = None

    def wall(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def watch(self) -> None:
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        try:
            agent = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return
        while self.proc.poll() is None:
            try:
                for rank in ranks_of(agent).values():
                    self.rank_pids.add(rank.pid)
                    self.seen.add(rank.pid)
                    self.seen.update(w.pid for w in loader_workers(rank))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def restarts(self, world_size: int) -> int:
        return max(len(self.rank_pids) // world_size - 1, 0)


# ------------------------------------------------------------------ planning


def total_steps(spec: Any, world_size: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of `spec` at `world_size`, as the trainer computes them."""
    from ddpcifar.data.meta import load_meta
    from ddpcifar.data.orders import validation_count

    n = load_meta(spec.data.dir).counts.train
    if spec.data.max_samples is not None:
        n = min(n, spec.data.max_samples)
    n -= validation_count(n, spec.data.val_size) if spec.data.val_size else 0
    rank_batch = spec.train.global_batch_size // world_size
    per_epoch = (n // world_size) // rank_batch
    return per_epoch, math.ceil(per_epoch * spec.train.epochs - 1e-9)


def plan_faults(*, steps: int, count: int, seed: int, gap: int, world_size: int,
                per_epoch: int, worker_window: int, kinds: Sequence[str] = KINDS,
                first: int = 2) -> list[Fault]:
    """`count` faults at distinct steps at least `gap` apart, in [first, steps - 2], each kind
    as often as the others (the shuffled kinds repeat), ranks drawn from `seed`'s generator.

    A kill_worker goes where its epoch has batches left to make (`1 <= step % per_epoch <=
    worker_window`); the kinds are shuffled again until they all do.
    """
    span = steps - 2 - first - (count - 1) * gap
    if count < 1 or span < 0:
        raise ChaosError(f"{count} faults {gap} steps apart do not fit a run of {steps} steps: "
                         "train longer, checkpoint more often or inject fewer")
    rng = random.Random(seed)
    offsets = sorted(rng.randrange(span + 1) for _ in range(count))
    at = [first + offset + i * gap for i, offset in enumerate(offsets)]
    order = [kinds[i % len(kinds)] for i in range(count)]
    for _ in range(1000):
        rng.shuffle(order)
        if all(k != "kill_worker" or 1 <= s % per_epoch <= worker_window
               for k, s in zip(order, at)):
            break
    else:
        raise ChaosError("no step of the plan leaves a loader worker batches to make: use "
                         "longer epochs or another --seed")
    return [Fault(kind=kind, step=step,
                  rank=0 if kind == "kill_in_write" else rng.randrange(world_size))
            for kind, step in zip(order, at)]


# ------------------------------------------------------------------ following a run


def train_steps(run_dir: Path) -> list[int]:
    """The train steps in metrics.jsonl so far (a half-written last line is skipped)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return []
    steps = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") == "train":
            steps.append(int(row["step"]))
    return steps


def ranks_of(agent: psutil.Process) -> dict[int, psutil.Process]:
    """The trainer processes torchrun started, by global rank (its direct children; the loader
    workers a rank forks are the rank's children and carry the same environment)."""
    out = {}
    for child in agent.children(recursive=False):
        try:
            if "ddpcifar.train" in " ".join(child.cmdline()):
                out[int(child.environ()["RANK"])] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            continue
    return out


def wait_until(check: Callable[[], Any], launch: Launch, what: str,
               limit_s: float = WAIT_S) -> Any:
    """Poll `check` until it returns something true; ChaosError if torchrun ends first."""
    deadline = time.monotonic() + limit_s
    while True:
        value = check()
        if value:
            return value
        if launch.proc.poll() is not None:
            raise ChaosError(f"torchrun ended (exit status {launch.proc.returncode}) while "
                             f"waiting for {what}")
        if time.monotonic() > deadline:
            raise ChaosError(f"gave up after {limit_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def current_attempt(launch: Launch, world_size: int) -> dict[int, psutil.Process]:
    """Every rank of a new attempt, once all of them run (none of a previous attempt's)."""
    agent = psutil.Process(launch.proc.pid)
    old = {pid for attempt in launch.attempts for pid in attempt.values()}

    def ready() -> dict[int, psutil.Process] | None:
        ranks = ranks_of(agent)
        if len(ranks) == world_size and not {p.pid for p in ranks.values()} & old:
            return ranks
        return None

    ranks = wait_until(ready, launch, "the ranks of a new attempt")
    launch.attempts.append({r: p.pid for r, p in ranks.items()})
    launch.seen.update(p.pid for p in ranks.values())
    return ranks


def loader_workers(rank: psutil.Process) -> list[psutil.Process]:
    try:
        return sorted(rank.children(recursive=False), key=lambda p: p.pid)
    except psutil.NoSuchProcess:
        return []


# ------------------------------------------------------------------ injecting


def inject(fault: Fault, ranks: dict[int, psutil.Process], run_dir: Path, trigger: Path,
           launch: Launch) -> None:
    """Inject `fault` into the attempt whose processes are `ranks`, and see it take effect."""
    victim = ranks[fault.rank]
    fault.injected_at_step = max(train_steps(run_dir), default=0)
    if fault.kind == "kill_rank":
        fault.pid = victim.pid
        victim.send_signal(signal.SIGKILL)
    elif fault.kind == "kill_worker":
        workers = loader_workers(victim)
        launch.seen.update(w.pid for w in workers)
        fault.pid = workers[0].pid
        workers[0].send_signal(signal.SIGKILL)
    elif fault.kind == "kill_in_write":
        fault.pid = victim.pid
        trigger.write_text(f"{fault.step}\n")  # the next checkpoint write consumes it and dies
        wait_until(lambda: not trigger.exists() or not _alive(victim), launch,
                   "a checkpoint write to take the kill")
    elif fault.kind == "freeze":
        fault.pid = victim.pid
        victim.send_signal(signal.SIGSTOP)
        others = [p for r, p in ranks.items() if r != fault.rank]
        try:
            # A peer stuck in a collective with it gives up after distributed.timeout_s.
            wait_until(lambda: any(not _alive(p) for p in others), launch,
                       "a rank to time out on the frozen one")
        finally:
            if _alive(victim):
                victim.send_signal(signal.SIGCONT)  # it takes torchrun's SIGTERM now
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r}")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def attempt_ended(ranks: dict[int, psutil.Process], launch: Launch) -> None:
    """Wait until every process of the attempt is gone (torchrun stops the survivors)."""
    wait_until(lambda: not any(_alive(p) for p in ranks.values()), launch,
               "the failed attempt's ranks to end")


def resumed_step(run_dir: Path) -> int | None:
    """The step of the checkpoint a resume would load now (what the next attempt loads)."""
    from ddpcifar.engine.checkpoint import load_latest
    from ddpcifar.errors import UserError

    try:
        state, _ = load_latest(run_dir / "checkpoints")
    except UserError:
        return None  # no checkpoint yet: the next attempt starts again from step 0
    return int(state["step"])


def worker_window(per_epoch: int, workers: int) -> int:
    """The last position in an epoch (steps done in it) at which a killed loader worker is
    surely missed: later it may have made its last batch (each worker prefetches two). Position 0
    is left out too: the previous epoch's workers may still be shutting down then."""
    return per_epoch - 2 * workers - 3


def drive(launch: Launch, faults: list[Fault], run_dir: Path, trigger: Path,
          world_size: int, per_epoch: int, window: int) -> None:
    """Inject every fault in turn; each must end its attempt and start exactly one more."""
    ranks = current_attempt(launch, world_size)

    def reached(fault: Fault) -> bool:
        newest = max(train_steps(run_dir), default=0)
        if fault.kind == "kill_worker":
            return newest >= fault.step and 1 <= newest % per_epoch <= window \
                and bool(loader_workers(ranks[fault.rank]))
        return newest >= fault.step

    for fault in faults:
        try:
            wait_until(lambda: reached(fault), launch, f"step {fault.step}")
        except ChaosError:
            if launch.proc.poll() == 0:
                fault.skipped = "the run finished first"
                continue
            raise
        t0 = time.monotonic()
        inject(fault, ranks, run_dir, trigger, launch)
        attempt_ended(ranks, launch)
        # Every process that wrote to the run directory is gone and the next attempt is still
        # importing torch: the files are as that attempt will find them.
        fault.last_step = max(train_steps(run_dir), default=0)
        fault.resumed_from = resumed_step(run_dir) or 0
        try:
            ranks = current_attempt(launch, world_size)
        except ChaosError:
            if launch.proc.poll() == 0:  # the last attempt finished before it was seen
                break
            raise
        fault.restart_s = round(time.monotonic() - t0, 2)


# ------------------------------------------------------------------ launching and checking


def launch_command(launcher: str, nproc: int, restarts: int, spec: Path,
                   overrides: Sequence[str]) -> list[str]:
    train_args = [str(spec), *(a for o in overrides for a in ("--set", o))]
    if launcher == "standalone":
        return [str(ROOT / "launch" / "standalone.sh"), f"--max-restarts={restarts}", "--",
                *train_args]
    torchrun = Path(sys.executable).parent / "torchrun"
    return [str(torchrun) if torchrun.exists() else "torchrun", "--standalone",
            f"--nproc-per-node={nproc}", f"--max-restarts={restarts}", "-m", "ddpcifar.train",
            *train_args]


def start(cmd: list[str], log: Path, env: dict[str, str]) -> Launch:
    fh = log.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    fh.close()
    launch = Launch(proc=proc, started=time.monotonic(), log=log)
    launch.watch()
    return launch


def finish(launch: Launch, limit_s: float) -> int:
    """Wait for torchrun; past `limit_s` stop it (SIGTERM lets it stop its workers), then kill
    whatever of it is left."""
    try:
        launch.proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        launch.proc.terminate()
        try:
            launch.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launch.proc.kill()
            launch.proc.wait()
    launch.ended = launch.ended or time.monotonic()
    return launch.proc.returncode


def launch_env(nproc: int, **extra: str) -> dict[str, str]:
    """The caller's environment for torchrun, without another launch's torchrun variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TORCHELASTIC", "MASTER_")) and k != FAULT_ENV}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({"NPROC": str(nproc), "RANKS_FILTER": "", "PYTHONFAULTHANDLER": "1", **extra})
    return env


def comparable(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the fields that measure wall time."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        values = {k: v for k, v in row["values"].items() if k != "images_per_s"}
        out.append({**{k: v for k, v in row.items() if k != "time"}, "values": values})
    return out


def leftovers(pids: set[int], grace_s: float = 30.0) -> list[int]:
    """The pids of `pids` still alive after `grace_s` (a dead rank's loader workers notice the
    death of their parent within a few seconds)."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = [p for p in sorted(pids) if psutil.pid_exists(p) and _alive(psutil.Process(p))]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def check(chaos_dir: Path, reference_dir: Path, steps: int, seen: set[int]) -> dict[str, Any]:
    """What the end of a chaos run must show, each as a figure (True/False or a list)."""
    import torch

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                          weights_only=True)["state_dict"]

    a, b = weights(reference_dir), weights(chaos_dir)
    expected = train_steps(reference_dir)
    left = leftovers(seen)
    for pid in left:  # never leave them behind ourselves
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    return {
        "weights_equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
        "metrics_equal": comparable(chaos_dir) == comparable(reference_dir),
        # The train lines an uninterrupted run writes (every logging.log_every steps and at
        # each epoch's end), each once, in order, up to the last step.
        "steps_logged_once": (train_steps(chaos_dir) == expected
                              and expected == sorted(set(expected)) and expected[-1:] == [steps]),
        "state": json.loads((chaos_dir / "status.json").read_text()).get("state"),
        "leftover_processes": left,
        "leftover_files": sorted(str(p.relative_to(chaos_dir)) for p in chaos_dir.rglob("*")
                                 if p.name.endswith(".tmp") or p.name == ".lock"),
    }


def run_chaos(spec_path: Path, overrides: Sequence[str], *, runs_dir: Path, nproc: int,
              faults: int, seed: int, timeout_s: float, launcher: str = "torchrun",
              kinds: Sequence[str] = KINDS, concurrent_reference: bool = False,
              name: str = "chaos") -> dict[str, Any]:
    """The whole soak: plan, reference run, chaos run, checks; returns the record."""
    from ddpcifar.spec import load_spec

    common = [*overrides, f"logging.runs_dir={runs_dir}", f"distributed.timeout_s={timeout_s}"]
    spec = load_spec(spec_path, common + [f"logging.run_name={name}"], world_size=nproc)
    if "kill_worker" in kinds and not (spec.augment.kind == "albumentations"
                                       and spec.data.num_workers > 0):
        raise ChaosError("kill_worker needs loader worker processes: augment.kind="
                         "albumentations with data.num_workers > 0 (or leave it out of --kinds)")
    if "freeze" in kinds and nproc < 2:
        raise ChaosError("freeze needs a second rank to time out on the frozen one")
    per_epoch, steps = total_steps(spec, nproc)
    every = spec.checkpoint.every_steps or per_epoch
    workers = spec.data.num_workers if spec.augment.kind == "albumentations" else 0
    # A dying attempt can log a few more steps (a kill inside a write lands at the next
    # checkpoint): faults further apart than that never meet the previous attempt's lines.
    plan = plan_faults(steps=steps, count=faults, seed=seed, gap=every + 4, world_size=nproc,
                       per_epoch=per_epoch, worker_window=worker_window(per_epoch, workers),
                       kinds=kinds)
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    trigger = work / "kill-in-write"
    load_start = [round(x, 2) for x in os.getloadavg()]

    ref_name = f"{name}-reference"
    ref_cmd = launch_command(launcher, nproc, 0, spec_path, common + [f"logging.run_name={ref_name}"])
    chaos_cmd = launch_command(launcher, nproc, len(plan), spec_path,
                               common + [f"logging.run_name={name}"])
    reference = start(ref_cmd, work / "reference.log", launch_env(nproc))
    if not concurrent_reference and finish(reference, WAIT_S) != 0:
        raise ChaosError(f"the uninterrupted run failed; see {reference.log}")
    chaos = start(chaos_cmd, work / "chaos.log", launch_env(nproc, **{FAULT_ENV: str(trigger)}))
    error = None
    try:
        drive(chaos, plan, runs_dir / name, trigger, nproc, per_epoch,
              worker_window(per_epoch, workers))
    except ChaosError as err:
        error = str(err)
    finally:
        finish(chaos, WAIT_S if error is None else 0)
    if finish(reference, WAIT_S) != 0:
        raise ChaosError(f"the uninterrupted run failed; see {reference.log}")
    reference_wall = None if concurrent_reference else reference.wall()
    chaos_wall = chaos.wall()
    record: dict[str, Any] = {
        "benchmark": "chaos",
        "commit": commit(),
        "command": shlex.join([sys.executable, *sys.argv]),
        "chaos_command": shlex.join(chaos_cmd),
        "cpu": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "spec": str(spec_path), "overrides": list(overrides), "nproc": nproc, "seed": seed,
        "timeout_s": timeout_s, "launcher": launcher, "max_restarts": len(plan),
        "steps": steps, "steps_per_epoch": per_epoch,
        "exit_code": chaos.proc.returncode, "error": error,
        "faults": [asdict(f) for f in plan],
        "faults_injected": sum(f.skipped is None for f in plan),
        "faults_by_kind": {k: sum(f.kind == k and f.skipped is None for f in plan)
                           for k in kinds},
        "restarts": chaos.restarts(nproc),
        "steps_replayed": sum((f.last_step or 0) - (f.resumed_from or 0) for f in plan
                              if f.skipped is None),
        "wall_s": round(chaos_wall, 1),
        "reference_wall_s": None if reference_wall is None else round(reference_wall, 1),
        "time_lost_s": None if reference_wall is None else round(chaos_wall - reference_wall, 1),
        "log": str(chaos.log),
    }
    if chaos.proc.returncode == 0:
        record.update(check(runs_dir / name, runs_dir / ref_name, steps, chaos.seen))
    return record


def passed(record: dict[str, Any]) -> bool:
    """Every fault survived and nothing lost."""
    return (record["exit_code"] == 0 and record.get("weights_equal") is True
            and record.get("metrics_equal") is True and record.get("steps_logged_once") is True
            and record.get("state") == "finished" and not record.get("leftover_processes")
            and not record.get("leftover_files")
            and record["restarts"] == record["faults_injected"])


def table(record: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {n}" for k, n in record["faults_by_kind"].items())
    rows = [
        ("faults injected", f"{record['faults_injected']} ({kinds})"),
        ("restarts (of --max-restarts)", f"{record['restarts']} (of {record['max_restarts']})"),
        ("exit status", record["exit_code"]),
        ("steps / replayed", f"{record['steps']} / {record['steps_replayed']}"),
        ("wall time chaos / uninterrupted (s)",
         f"{record['wall_s']} / {record['reference_wall_s']}"),
        ("time lost (s)", record["time_lost_s"]),
        ("final weights torch.equal", record.get("weights_equal")),
        ("metrics.jsonl equal but timing", record.get("metrics_equal")),
        ("every logged train line once", record.get("steps_logged_once")),
        ("processes left behind", record.get("leftover_processes")),
        ("temporary files or lock left", record.get("leftover_files")),
        ("CPU (load average start / end)",
         f"{record['cpu']} ({record['load_average_start']} / {record['load_average_end']})"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'figure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    per_fault = ["", "| # | kind | rank | at step | last step | resumed from | restart s |",
                 "|---|---|---|---|---|---|---|"]
    for i, f in enumerate(record["faults"], 1):
        per_fault.append(f"| {i} | {f['kind']} | {f['rank']} | {f['injected_at_step']} | "
                         f"{f['last_step']} | {f['resumed_from']} | "
                         f"{f['restart_s'] if f['skipped'] is None else f['skipped']} |")
    return "\n".join(lines + per_fault)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="spec override (repeatable)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"fault kinds, comma-separated (default {','.join(KINDS)})")
    parser.add_argument("--seed", type=int, default=0, help="seeds where and which faults")
    parser.add_argument("--timeout-s", type=float, default=20.0,
                        help="distributed.timeout_s: how long a frozen rank is waited for")
    parser.add_argument("--launcher", choices=("torchrun", "standalone"), default="torchrun",
                        help="plain torchrun (default) or launch/standalone.sh")
    parser.add_argument("--runs-dir", type=Path, help="where the two runs go (default: a "
                                                      "temporary directory)")
    parser.add_argument("--concurrent-reference", action="store_true",
                        help="run the uninterrupted run beside the chaos run (no time lost)")
    parser.add_argument("--out", type=Path, help="append the JSON record to this file's list")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; allowed: {', '.join(KINDS)}")
    runs_dir = (args.runs_dir or Path(tempfile.mkdtemp(prefix="chaos-runs-"))).resolve()
    record = run_chaos(args.spec, args.overrides, runs_dir=runs_dir, nproc=args.nproc,
                       faults=args.faults, seed=args.seed, timeout_s=args.timeout_s,
                       launcher=args.launcher, kinds=kinds,
                       concurrent_reference=args.concurrent_reference)
    record["passed"] = passed(record)
    print(table(record))
    if args.out:
        records = json.loads(args.out.read_text()) if args.out.exists() else []
        records.append(record)
        args.out.write_text(json.dumps(records, indent=2) + "\n")
        print(f"record appended to {args.out}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
