"""Classify images with a checkpoint: top-k classes and probabilities.

    python -m ddpcifar.predict runs/era_s9/checkpoints/best.pt cat.png photos/
    python -m ddpcifar.predict runs/era_s9/checkpoints/best.pt data/cifar10:test --json --out p.json

Inputs are image files (any mode, made RGB; not 32x32: resized, and said so), folders (their
image files, recursively) and DIR:SPLIT, a prepared data directory's split with its labels. The
checkpoint's own normalisation is applied; a NumPy engine `.npz` works too. See docs/inference.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ddpcifar.errors import UserError, cli_main
from ddpcifar.inference.checkpoints import Classifier, load_classifier
from ddpcifar.inference.inputs import InputSet, gather_inputs, iter_batches
from ddpcifar.inference.output import check_writable, write_text
from ddpcifar.inference.report import Prediction, predictions, print_table, to_csv, to_json

DEFAULT_BATCH_SIZE = 256

EXAMPLES = """\
examples:
  python -m ddpcifar.predict runs/era_s9/checkpoints/best.pt cat.png dog.jpg
  python -m ddpcifar.predict runs/era_s9/checkpoints/best.pt photos/ --top-k 5 --tta 2
  python -m ddpcifar.predict runs/era_s9/checkpoints/best.pt data/cifar10:test --json --out test.json
  python -m ddpcifar.predict runs/scratch_cnn/checkpoints/scratch_best.npz img.png --data data/cifar10
"""


def predict(classifier: Classifier, inputs: InputSet, classes: Sequence[str], *, top_k: int = 3,
            tta: int = 0, batch_size: int = DEFAULT_BATCH_SIZE, resize: bool = True,
            progress: bool = False) -> list[Prediction]:
    """Top-`top_k` predictions for every input, in order, `batch_size` images at a time."""
    from rich.console import Console

    from ddpcifar.progress import steps_progress

    k = min(top_k, len(classes))
    out: list[Prediction] = []
    with steps_progress(Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("predicting", total=len(inputs.items))
        for batch in iter_batches(inputs.items, batch_size, resize=resize):
            logits = classifier.logits(batch.images, tta=tta)
            out.extend(predictions(batch.items, logits, classes, k, batch.resized_from))
            bar.advance(task, len(batch.items))
    return out


def class_names(classifier: Classifier, inputs: InputSet, data_dir: Path | None) -> list[str]:
    """The checkpoint's class names, checked against every prepared directory involved; a
    `.npz` (which saves none) takes them from `--data` or from its DIR:SPLIT input."""
    from ddpcifar.data.meta import load_meta

    sources = dict(inputs.data_classes)
    if data_dir is not None:
        sources[data_dir] = list(load_meta(data_dir).classes)
    names = classifier.classes
    if names is None:
        if not sources:
            raise UserError("a NumPy engine checkpoint saves no class names: pass --data DIR "
                            "(a prepared data directory) or a DIR:SPLIT input")
        names = next(iter(sources.values()))
    for where, theirs in sources.items():
        if classifier.classes is None and len(theirs) != classifier.num_classes:
            raise UserError(f"{where} has {len(theirs)} classes, but the checkpoint has "
                            f"{classifier.num_classes} outputs")
        if list(theirs) != list(names):
            raise UserError(f"{where} has classes {list(theirs)}, but the checkpoint's are "
                            f"{list(names)}")
    return list(names)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.predict", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Classify images with a ddpcifar checkpoint: top-k classes with "
                    "probabilities, as a table (default), JSON or CSV. Images of any mode are "
                    "made RGB; one that is not 32x32 is resized (PIL bicubic, antialiased) and "
                    "the output says so.")
    parser.add_argument("checkpoint", type=Path,
                        help="a .pt written by ddpcifar.train (best.pt, last.pt), or a NumPy "
                             "engine .npz")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="an image file (PNG, JPEG, ...), a folder (its image files, "
                             "recursively, sorted), or DIR:SPLIT for a prepared data "
                             "directory's split (e.g. data/cifar10:test; outputs carry labels)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--out", type=Path,
                        help="write the --json or --csv output to this file (atomically) "
                             "instead of stdout")
    parser.add_argument("--top-k", type=int, default=3, help="classes per image (default: 3)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per forward pass (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--tta", type=int, choices=(0, 1, 2), default=0,
                        help="test-time augmentation, as evaluate's: 0 none (default), 1 mirror, "
                             "2 mirror + 1-pixel translations; torch checkpoints only")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (a .npz runs on the CPU)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"),
                        help="autocast dtype (default: the one the run trained with, as "
                             "evaluate); torch checkpoints only")
    parser.add_argument("--no-resize", action="store_true",
                        help="refuse images that are not 32x32 instead of resizing them")
    parser.add_argument("--data", type=Path,
                        help="a prepared data directory whose class names a .npz's outputs "
                             "take (a .pt carries its own; given, they must match)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    if args.out is not None:
        if not (args.json or args.csv):
            raise UserError("--out needs --json or --csv")
        check_writable(args.out)
    inputs = gather_inputs(args.inputs, resize=not args.no_resize)
    classifier = load_classifier(args.checkpoint, device=args.device, amp=args.amp, tta=args.tta)
    classes = class_names(classifier, inputs, args.data)
    progress = (not args.quiet and len(inputs.items) > args.batch_size and sys.stderr.isatty())
    preds = predict(classifier, inputs, classes, top_k=args.top_k, tta=args.tta,
                    batch_size=args.batch_size, resize=not args.no_resize, progress=progress)
    header: dict[str, Any] = {"checkpoint": str(args.checkpoint), "model": classifier.model,
                              "epoch": classifier.epoch, "classes": classes,
                              "device": classifier.device, "amp": classifier.amp,
                              "tta": args.tta, "count": len(preds)}
    if args.json or args.csv:
        text = to_json(preds, header) if args.json else to_csv(preds, min(args.top_k,
                                                                            len(classes)))
        if args.out is not None:
            write_text(args.out, text)
        else:
            sys.stdout.write(text)
    else:
        print_table(preds, header, min(args.top_k, len(classes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
