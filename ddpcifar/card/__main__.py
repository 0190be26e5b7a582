"""`python -m ddpcifar.card RUN...`: write each run's MODEL_CARD.md again (docs/model_card.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddpcifar.card.write import CARD, IMAGES_DIR, write_card
from ddpcifar.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.card",
        description=f"Write the model card of a run directory: {CARD} (model, parameter count, "
                    "the resolved spec, data source and checksums, world size and device, time "
                    "to accuracy, top-1/top-5/TTA final and best, validation metrics, per-class "
                    "accuracy, the most confused classes, exports and their parity, "
                    f"limitations) and its charts in {IMAGES_DIR}/ (loss, accuracy, confusion, "
                    "misclassified images). Every run writes its card when it ends; this writes "
                    "it again, e.g. after an export or for a run from before cards existed.",
        epilog="examples:\n  python -m ddpcifar.card runs/era_s9\n"
               "  python -m ddpcifar.card runs/sweep_lr/trial-0003 runs/resnet9",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="a run directory (holding status.json)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for run in args.runs:
        print(write_card(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
