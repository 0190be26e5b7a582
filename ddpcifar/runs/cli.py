"""`python -m ddpcifar.runs`: every run action from a shell, one line per action.

    python -m ddpcifar.runs launch specs/era_s9.json --set train.epochs=2 --nproc 2
    python -m ddpcifar.runs ls runs --state running,queued --sort best_top1
    python -m ddpcifar.runs stop runs/era_s9            # a second stop kills
    python -m ddpcifar.runs resume runs/era_s9
    python -m ddpcifar.runs clone runs/era_s9 --set optimizer.lr=0.05
    python -m ddpcifar.runs queue                       # list; move, cancel, slots
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ddpcifar.errors import UserError, cli_main
from ddpcifar.runs import control, queue, states
from ddpcifar.runs.launch import launch
from ddpcifar.runs.present import duration, pct, rate, state_label
from ddpcifar.runs.reader import RunInfo, RunScanner, log_tail
from ddpcifar.runs.select import METRIC_KEYS, SORT_FIELDS, RunFilter, condition, select

EXAMPLES = __doc__.split("\n\n", 1)[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.runs",
        description="Launch, stop, resume, clone, queue and list training runs. Runs are "
                    "detached (they keep going when the shell or the dashboard goes) and wait "
                    "in a per-machine queue while its slots are busy.",
        epilog="examples:\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("launch", help="start a new run (or queue it)",
                       description="Validate SPEC with its overrides for NPROC ranks, create the "
                                   "run directory and queue `torchrun --standalone "
                                   "--nproc_per_node=NPROC -m ddpcifar.train SPEC ...`.")
    p.add_argument("spec", type=Path, help="run spec (JSON)")
    _overrides(p)
    p.add_argument("--nproc", type=int, default=1, help="ranks on this machine (default 1)")
    p.add_argument("--name", help="run name (same as --set logging.run_name=NAME)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of each rank")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="tag (repeatable)")

    p = sub.add_parser("stop", help="stop a running run (checkpoint, then state stopped)",
                       description="SIGTERM: the run finishes its step, writes a checkpoint and "
                                   "ends as stopped. A second stop, or --kill, kills it at once. "
                                   "A queued run is taken out of the queue.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--kill", action="store_true", help="kill at once (no checkpoint)")
    p.add_argument("--wait", type=float, nargs="?", const=300.0, metavar="SECONDS",
                   help="wait until it has stopped (default up to 300 s)")

    p = sub.add_parser("resume", help="continue a stopped, failed or lost run",
                       description="Queue the run again with --resume: it continues from its "
                                   "last checkpoint, as an elastic restart does.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    p.add_argument("--nproc", type=int, help="ranks (default: as before)")

    p = sub.add_parser("clone", help="a new run from a run's spec, with changes",
                       description="Queue a new run from RUN's resolved spec with --set changes.")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory")
    _overrides(p)
    p.add_argument("--name", help="new run name (default NAME-2, NAME-3, ...)")
    p.add_argument("--nproc", type=int, help="ranks (default: as RUN)")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="tag (repeatable)")

    p = sub.add_parser("queue", help="list, reorder or cancel queued runs; set the slot count",
                       description="This machine's queue in a runs directory. Without an action: "
                                   "list it.")
    qs = p.add_subparsers(dest="action", metavar="ACTION")
    q = qs.add_parser("list", help="list the queue (the default)")
    q.add_argument("--runs", type=Path, default=Path("runs"), help="runs directory (default runs/)")
    q = qs.add_parser("move", help="move a queued run to a position (1: next)")
    q.add_argument("run", type=Path, metavar="RUN")
    q.add_argument("position", type=int)
    q = qs.add_parser("cancel", help="take a run out of the queue (it becomes stopped)")
    q.add_argument("run", type=Path, metavar="RUN")
    q = qs.add_parser("slots", help="how many runs may train at once on this machine")
    q.add_argument("slots", type=int)
    q.add_argument("--runs", type=Path, default=Path("runs"), help="runs directory (default runs/)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="runs directory (default runs/)")

    p = sub.add_parser("ls", help="list runs, with filters", description="List the runs of a "
                       "runs directory (sweep trials included).")
    p.add_argument("runs_dir", type=Path, nargs="?", default=Path("runs"), metavar="RUNS_DIR")
    p.add_argument("--state", help="comma-separated states (queued, running, stopped, finished, "
                                   "failed, pruned, lost, remote)")
    p.add_argument("--model", help="comma-separated models")
    p.add_argument("--name", help="part of the name")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="tag (repeatable)")
    p.add_argument("--where", action="append", default=[], metavar="FIELD<op>VALUE",
                   help="spec field condition, e.g. optimizer.lr>=0.01 (repeatable)")
    p.add_argument("--sort", default="name",
                   help=f"sort key: {', '.join([*SORT_FIELDS, *METRIC_KEYS])}")
    p.add_argument("--reverse", action="store_true", help="descending")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    p = sub.add_parser("tag", help="add (+T) or remove (-T) tags")
    p.add_argument("run", type=Path, metavar="RUN")
    p.add_argument("changes", nargs="*", metavar="+TAG|-TAG")

    p = sub.add_parser("log", help="print the end of a run's log (every rank's output)")
    p.add_argument("run", type=Path, metavar="RUN")
    p.add_argument("-n", type=int, default=20, help="lines (default 20)")

    return parser


def internal_parser() -> argparse.ArgumentParser:
    """The commands that only the lifecycle itself starts (not listed in --help)."""
    parser = argparse.ArgumentParser(prog="python -m ddpcifar.runs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("_serve")
    p.add_argument("runs_dir", type=Path)
    p = sub.add_parser("_supervise")
    p.add_argument("run", type=Path)
    p.add_argument("--slot-fd", type=int)
    return parser


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override a spec field (repeatable)")


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    internal = bool(argv) and argv[0] in ("_serve", "_supervise")
    args = (internal_parser() if internal else build_parser()).parse_args(argv)
    handler = {"launch": _launch, "stop": _stop, "resume": _resume, "clone": _clone,
               "queue": _queue, "ls": _ls, "tag": _tag, "log": _log, "_serve": _serve,
               "_supervise": _supervise}[args.command]
    return handler(args)


def _launch(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"logging.run_name={args.name}")
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1: {args.threads}")
    print(launch(args.spec, overrides, nproc=args.nproc, tags=args.tags, env=env).line())
    return 0


def _stop(args: argparse.Namespace) -> int:
    result = control.stop(args.run, kill=args.kill)
    print(result.line())
    if args.wait is not None and result.info.state == states.RUNNING:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            info = control.info_of(args.run)
            if info.state != states.RUNNING:
                print(f"{info.name} is {info.state} at epoch {info.epoch}/{info.epochs}"
                      + (f" ({info.error})" if info.error else ""))
                return 0 if info.state == states.STOPPED else 1
            time.sleep(0.5)
        raise UserError(f"{result.info.name} is still running after {args.wait:g} s")
    return 0


def _resume(args: argparse.Namespace) -> int:
    print(control.resume(args.run, nproc=args.nproc).line("resumed"))
    return 0


def _clone(args: argparse.Namespace) -> int:
    print(control.clone(args.run, args.overrides, name=args.name, nproc=args.nproc,
                        tags=args.tags).line("cloned into"))
    return 0


def _queue(args: argparse.Namespace) -> int:
    action = args.action or "list"
    if action == "move":
        root, name = _queued(args.run)
        print(f"moved {name} to position {queue.move(root, name, args.position)}")
    elif action == "cancel":
        print(f"cancelled {control.info_of(args.run).name}: {control.cancel(args.run)}")
    elif action == "slots":
        queue.set_slots(args.runs, args.slots)
        print(f"{args.runs}: up to {args.slots} run(s) train at once on this machine")
    else:
        state = queue.read_queue(args.runs)
        busy = queue.busy_slots(args.runs)
        print(f"{args.runs}: {len(busy)} of {state.slots} slot(s) busy"
              + (f" ({', '.join(busy)})" if busy else "") + f", {len(state.order)} queued")
        for i, name in enumerate(state.order, start=1):
            print(f"{i:>3}  {name}")
    return 0


def _queued(run: Path) -> tuple[Path, str]:
    from ddpcifar.runs.launch import runs_root

    info = control.info_of(run)
    if info.state != states.QUEUED:
        raise UserError(f"{info.name} is {info.state}, not queued")
    return runs_root(info.path)


def _ls(args: argparse.Namespace) -> int:
    if not args.runs_dir.is_dir():
        raise UserError(f"runs directory not found: {args.runs_dir}")
    scan = RunScanner(args.runs_dir).scan(time.time())
    flt = RunFilter(words=(args.name.lower(),) if args.name else (),
                    states=tuple(_csv(args.state)), models=tuple(_csv(args.model)),
                    tags=tuple(args.tags), conditions=tuple(condition(w) for w in args.where))
    runs = select(scan.runs, flt, args.sort, args.reverse)
    for problem in scan.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps([_as_json(r) for r in runs], indent=2))
    else:
        _table(runs)
    return 0


def _csv(text: str | None) -> list[str]:
    return [v for v in (text or "").split(",") if v]


def _as_json(r: RunInfo) -> dict:
    return {"name": r.name, "path": str(r.path), "state": r.state, "model": r.model,
            "engine": r.engine, "epoch": r.epoch, "epochs": r.epochs, "world_size": r.world_size,
            "best_top1": r.best_top1, "last_top1": r.last_top1, "top1_tta": r.top1_tta,
            "val_top1": r.val_top1, "images_per_s": r.images_per_s, "elapsed_s": r.elapsed_s,
            "queue_position": r.queue_position, "host": r.host, "tags": list(r.tags),
            "sweep": r.sweep, "error": r.error, "metrics": r.metrics}


def _table(runs: list[RunInfo]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for header in ("name", "state", "model", "epoch", "best top-1", "TTA", "val", "elapsed",
                   "img/s", "tags"):
        table.add_column(header, justify="right" if header in ("epoch", "img/s") else "left")
    for r in runs:
        table.add_row(r.name, state_label(r), r.model, f"{r.epoch}/{r.epochs}", pct(r.best_top1),
                      pct(r.top1_tta), pct(r.val_top1), duration(r.elapsed_s),
                      rate(r.images_per_s),
                      ",".join(r.tags))
    Console(highlight=False).print(table)
    if not runs:
        print("no runs")


def _tag(args: argparse.Namespace) -> int:
    add = [c[1:] for c in args.changes if c.startswith("+")]
    remove = [c[1:] for c in args.changes if c.startswith("-")]
    plain = [c for c in args.changes if not c.startswith(("+", "-"))]
    tags = control.tag(args.run, [*add, *plain], remove)
    print(f"{control.info_of(args.run).name}: tags {', '.join(tags) or '(none)'}")
    return 0


def _log(args: argparse.Namespace) -> int:
    info = control.info_of(args.run)
    lines = log_tail(info.path, args.n)
    if not lines:
        raise UserError(f"{info.name} has no log yet (run.log is written by launched runs)")
    print("\n".join(lines))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ddpcifar.runs.launch import start_run

    queue.serve(args.runs_dir, start_run)
    return 0


def _supervise(args: argparse.Namespace) -> int:
    from ddpcifar.runs.supervise import supervise

    return supervise(args.run, args.slot_fd)
