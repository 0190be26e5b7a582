"""`python -m ddpcifar.sweep`: run a sweep's workers, show where it stands, export its schema.

    python -m ddpcifar.sweep run specs/sweep_airbench94.json              # one worker
    python -m ddpcifar.sweep run specs/sweep_airbench94.json --workers 2  # two, this machine
    python -m ddpcifar.sweep run specs/sweep_airbench94.json --dry-run    # the first specs
    python -m ddpcifar.sweep show runs/sweep_airbench94 [--json]
    python -m ddpcifar.sweep schema --out specs/sweep.schema.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ddpcifar.atomic import write_json
from ddpcifar.errors import UserError, cli_main

EXAMPLES = __doc__.split("\n\n", 1)[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.sweep",
        description="Hyperparameter sweeps on Optuna: every trial is an ordinary torchrun run "
                    "in the sweep's directory; workers on one machine or many share a study.",
        epilog="examples:\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run workers until the study has its trials",
                       description="Start (or continue) a sweep: workers ask for trials, run "
                                   "them and tell the results, until `trials` are complete or "
                                   "pruned. Running it again continues it (the count is the "
                                   "total). Ctrl-C stops the current trial cleanly.")
    p.add_argument("sweep", type=Path, help="sweep file (JSON), or a sweep directory")
    p.add_argument("--workers", type=int, default=1, help="worker processes here (default 1)")
    p.add_argument("--dry-run", type=int, nargs="?", const=3, metavar="N",
                   help="print the first N trials' specs (default 3); run and write nothing")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="FIELD=VALUE", help="override a field of the sweep file (repeatable)")
    p.add_argument("--label", default="", help=argparse.SUPPRESS)  # a worker's line prefix
    p = sub.add_parser("show", help="trials, best, importances, plots",
                       description="The trials of a sweep, its best trial and command, "
                                   "parameter importances; writes plots/*.png in its directory.")
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")
    p = sub.add_parser("schema", help="the sweep file's JSON Schema")
    p.add_argument("--out", type=Path, help="write here instead of stdout")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        return _schema(args)
    if args.command == "show":
        return _show(args)
    return _run(args)


def _schema(args: argparse.Namespace) -> int:
    from ddpcifar.sweep.config import SweepSpec

    schema = SweepSpec.model_json_schema(by_alias=True)
    schema.update({"$id": "https://ddpcifar.local/sweep.schema.json", "title": "ddpcifar sweep"})
    from ddpcifar.atomic import write_text_or_print

    write_text_or_print(json.dumps(schema, indent=2) + "\n", args.out)
    return 0


def _resolve(args: argparse.Namespace) -> tuple[Any, Path, dict[str, Any], Path]:
    """(sweep, its directory, the base spec data, cwd), every check done, nothing written."""
    from ddpcifar.sweep.config import check_against_spec, load_sweep

    cwd = Path.cwd()
    path = args.sweep
    if path.is_dir():  # a sweep directory: continue the sweep it records
        record = _read_record(path)
        cwd = Path(record["cwd"])
        sweep = load_sweep_data(record["sweep"], args.overrides, str(path))
    else:
        sweep = load_sweep(path, args.overrides)
    base = check_against_spec(sweep, cwd)
    if args.workers < 1 or args.workers > 64:
        raise UserError(f"--workers must be between 1 and 64: {args.workers}")
    return sweep, (cwd / sweep.directory).resolve(), base, cwd


def load_sweep_data(data: dict[str, Any], overrides: list[str], source: str) -> Any:
    from ddpcifar.sweep.config import validate_sweep

    return validate_sweep(data, overrides, source)


def _read_record(sweep_dir: Path) -> dict[str, Any]:
    from ddpcifar.sweep.show import SWEEP_RECORD

    try:
        return json.loads((sweep_dir / SWEEP_RECORD).read_text())
    except FileNotFoundError:
        raise UserError(f"not a sweep directory (no {SWEEP_RECORD}): {sweep_dir}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{sweep_dir / SWEEP_RECORD}: unreadable ({err})") from None


def _same_as_recorded(sweep: Any, sweep_dir: Path) -> None:
    """A sweep run again must describe the same sweep (only the trial budget may change: the
    count is the total)."""
    from ddpcifar.sweep.show import SWEEP_RECORD

    if not (sweep_dir / SWEEP_RECORD).exists():
        return
    old, mine = _read_record(sweep_dir)["sweep"], sweep.resolved()
    changed = sorted(k for k in set(old) | set(mine) if k != "trials" and old.get(k) != mine.get(k))
    if changed:
        raise UserError(f"sweep {sweep.name} exists in {sweep_dir} with other settings "
                        f"({', '.join(changed)}); name it differently to start a new one")


def _record(sweep: Any, sweep_dir: Path, cwd: Path, source: Path) -> None:
    """sweep.json: the sweep as it runs, where from, and the directory its paths resolve in."""
    from ddpcifar.sweep.show import SWEEP_RECORD

    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / SWEEP_RECORD,
               {"sweep": sweep.resolved(), "source": str(source), "cwd": str(cwd)})


def _run(args: argparse.Namespace) -> int:
    sweep, sweep_dir, base, cwd = _resolve(args)
    if args.dry_run is not None:
        return _dry_run(sweep, sweep_dir, base, args.dry_run)
    if args.sweep.is_file():
        _same_as_recorded(sweep, sweep_dir)
    from ddpcifar.sweep.storage import is_url, open_storage

    if is_url(sweep.storage):  # reach the database before anything is written
        open_storage(sweep.storage, sweep_dir, sweep.heartbeat_s)
    _record(sweep, sweep_dir, cwd, args.sweep.resolve() if args.sweep.is_file() else
            Path(_read_record(sweep_dir)["source"]))
    from ddpcifar.runs.queue import read_queue

    slots = read_queue(sweep_dir.parent).slots
    if args.workers > slots:
        print(f"note: {args.workers} workers share {slots} slot(s) on this machine; "
              f"`python -m ddpcifar.runs queue slots {args.workers} --runs "
              f"{os.path.relpath(sweep_dir.parent)}` lets their trials train at once")
    if args.workers > 1:
        return _many_workers(args, sweep, sweep_dir)
    from ddpcifar.sweep.show import summary_line
    from ddpcifar.sweep.worker import Worker

    label = f"[{args.label}] " if args.label else ""
    worker = Worker(sweep, sweep_dir, base, cwd, say=lambda line: print(label + line, flush=True))
    try:
        worker.run()
    except KeyboardInterrupt:
        print(f"{label}stopped at once", flush=True)
    print(label + summary_line(sweep, worker.study), flush=True)
    return 0


def _many_workers(args: argparse.Namespace, sweep: Any, sweep_dir: Path) -> int:
    """N worker processes sharing the study; signals reach them all."""
    argv = [sys.executable, "-m", "ddpcifar.sweep", "run", str(args.sweep)]
    for text in args.overrides:
        argv += ["--set", text]
    procs = [subprocess.Popen([*argv, "--label", f"w{k}"]) for k in range(1, args.workers + 1)]

    def forward(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:  # Ctrl-C reached the workers too (one process group)
        codes = [proc.wait() for proc in procs]
    finally:
        signal.signal(signal.SIGTERM, previous)
    return max(codes)


def _dry_run(sweep: Any, sweep_dir: Path, base: dict[str, Any], count: int) -> int:
    """The first trials the sampler would ask for an empty study, and their specs."""
    import optuna

    from ddpcifar.runs.launch import display, train_command
    from ddpcifar.spec import apply_overrides
    from ddpcifar.sweep.trial import run_name, trial_overrides
    from ddpcifar.sweep.worker import pruner, sampler, suggest

    study = optuna.create_study(direction="maximize" if sweep.objective.maximize else "minimize",
                                sampler=sampler(sweep), pruner=pruner(sweep))
    print(f"dry run of sweep {sweep.name} ({sweep_dir}): nothing is run or written")
    for number in range(min(count, sweep.trials)):
        study.sampler = sampler(sweep, number)  # as a worker asks for trial `number`
        trial = study.ask()
        params = suggest(trial, sweep)
        for k, seed in enumerate(sweep.seeds):
            name = run_name(trial.number, k, len(sweep.seeds))
            overrides = trial_overrides(sweep, params, sweep_dir, name, seed)
            spec = apply_overrides(base, overrides)
            print(f"\ntrial {trial.number} seed {seed}: {name}")
            print("  " + display(train_command(sweep_dir / name / "spec.json",
                                               nproc=sweep.ranks)))
            print("  " + json.dumps(spec, sort_keys=True))
        study.tell(trial, 0.0)  # a placeholder, so the next ask moves on
    return 0


def _show(args: argparse.Namespace) -> int:
    from ddpcifar.sweep.show import (best_command, best_trial, importances, load_sweep_dir,
                                     summary_line, trial_rows, write_plots)

    sweep, record, study = load_sweep_dir(args.sweep_dir)
    rows = trial_rows(sweep, study)
    best = best_trial(study)
    imp = importances(study)
    plots = [] if args.no_plots else write_plots(study, args.sweep_dir / "plots")
    if args.json:
        print(json.dumps({"sweep": sweep.name, "objective": sweep.objective.metric,
                          "direction": "maximize" if sweep.objective.maximize else "minimize",
                          "trials": rows, "best": best.number if best else None,
                          "best_command": best_command(sweep, best) if best else None,
                          "importances": imp, "plots": [str(p) for p in plots],
                          "summary": summary_line(sweep, study)}, indent=2))
        return 0
    _table(sweep, rows, best.number if best else None)
    print(summary_line(sweep, study))
    if best is not None:
        print(f"best: trial {best.number} {json.dumps(best.params)}")
        command = best_command(sweep, best)
        if command:
            print(f"  {command}")
    if imp:
        print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
    for path in plots:
        print(f"plot: {path}")
    return 0


def _table(sweep: Any, rows: list[dict[str, Any]], best: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for header in ("#", "state", *sweep.space, sweep.objective.metric, "test top-1", "epochs",
                   "time"):
        table.add_column(header, justify="right" if header != "state" else "left")
    for r in rows:
        mark = "★ " if r["number"] == best else ""
        value = "–" if r["value"] is None else f"{r['value']:.4f}"
        test = "–" if r["test_top1"] is None else f"{r['test_top1']:.4f}"
        params = [_fmt(r["params"].get(p)) for p in sweep.space]
        state = r["state"] + (f" → #{r['retried_as']}" if r.get("retried_as") is not None else "")
        table.add_row(f"{mark}{r['number']}", state, *params, value, test, str(r["epochs"]),
                      "–" if r["duration_s"] is None else f"{r['duration_s']:.0f}s")
    Console(highlight=False).print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
