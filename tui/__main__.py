"""`python -m tui [--runs DIR]` opens the dashboard; `python -m tui export RUN_DIR --out DIR` writes PNGs.

Deliberately torch-free: the dashboard only reads the run directory (docs/run_directory.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddpcifar.errors import UserError, cli_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tui",
        description="Terminal dashboard for ddpcifar training runs: follow them live (status, "
                    "metrics, misclassified samples, logs) and launch, stop, resume, clone and "
                    "queue them (through python -m ddpcifar.runs, so runs outlive the "
                    "dashboard). Press ? inside for the key bindings.",
        epilog="examples:\n  python -m tui                       # follow ./runs\n"
               "  python -m tui --runs /data/runs     # another runs directory\n"
               "  python -m tui export runs/era_s9 --out plots/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"), metavar="DIR",
                        help="directory holding one sub-directory per run (default: runs/)")
    parser.add_argument("--specs", type=Path, default=Path("specs"), metavar="DIR",
                        help="specs the new-run form offers (default: specs/)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="how often to re-read the runs directory (default: 1.0)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    export = sub.add_parser(
        "export", help="write PNG charts of one run (loss, accuracy, per-class, confusion, "
                       "misclassified images)",
        description="Write PNG charts of one finished or running run with matplotlib.")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="one run directory")
    export.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="where to write the PNG files (created if missing)")
    export.add_argument("--epoch", type=int, default=None,
                        help="evaluation whose samples to draw (default: the latest)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "export":
        from tui.export import export_run  # matplotlib only when exporting

        for path in export_run(args.run_dir, args.out, epoch=args.epoch):
            print(path)
        return 0
    if args.poll <= 0:
        raise UserError(f"--poll must be positive: {args.poll}")
    if not args.runs.is_dir():
        raise UserError(f"runs directory not found: {args.runs}")
    from tui.app import DashboardApp

    DashboardApp(args.runs, poll_interval=args.poll, specs_dir=args.specs).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
