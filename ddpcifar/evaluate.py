"""Evaluate a checkpoint on a prepared dataset.

    python -m ddpcifar.evaluate runs/era_s9/checkpoints/best.pt --data data/cifar10 [--json]
    python -m ddpcifar.evaluate runs/scratch_cnn/checkpoints/scratch_best.npz --data data/cifar10

The checkpoint carries the model name, class names and input normalisation, so nothing else is
needed. A NumPy engine checkpoint (`.npz`) is evaluated by that engine's own evaluation, on the
CPU, with the normalisation and eval.batch_size it saved (class names: the data's). The JSON keys
(`top1`, `top3`, `top5`, `loss`, `per_class`, `confusion`) are the ones `summary.json` uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ddpcifar.errors import UserError, cli_main
from ddpcifar.inference.checkpoints import (SCRATCH_MODEL, is_scratch_checkpoint, load_scratch,
                                            refuse_torch_options)

DEFAULT_BATCH_SIZE = 1000


def evaluate_checkpoint(checkpoint: Path, data_dir: Path, *, batch_size: int | None = None,
                        loader: str = "memory", device: str = "auto",
                        amp: str | None = None, tta: int | None = None,
                        tta_threshold: float | None = None) -> dict[str, Any]:
    """Metrics of `checkpoint` on `data_dir`'s test split, in one process.

    `tta` (0, 1, 2) adds top1_tta; None: the level the run's spec evaluated with.
    `tta_threshold`: selective TTA, only for the predictions with at most this confidence;
    None: the run's eval.tta_threshold (null there: all of them). `batch_size` None: 1000 (a
    NumPy engine checkpoint: the eval.batch_size it was trained with).
    """
    if is_scratch_checkpoint(checkpoint):
        if tta_threshold is not None:
            raise UserError(f"--tta-threshold: {checkpoint} is a NumPy engine checkpoint, which "
                            "has no test-time augmentation")
        refuse_torch_options(checkpoint, loader=loader, device=device, amp=amp, tta=tta)
        return evaluate_scratch_checkpoint(checkpoint, data_dir, batch_size=batch_size)
    from ddpcifar.data.config import AugmentConfig, DataConfig
    from ddpcifar.data.loaders import build_loader
    from ddpcifar.data.meta import load_meta
    from ddpcifar.engine.checkpoint import load_checkpoint
    from ddpcifar.engine.device import select_device
    from ddpcifar.engine.evaluation import evaluate
    from ddpcifar.engine.state import load_model
    from ddpcifar.engine.wrap import resolve_amp

    state = load_checkpoint(checkpoint)
    meta = load_meta(data_dir, verify_sha256=True)
    if list(meta.classes) != list(state["classes"]):
        raise UserError(f"{data_dir} has classes {list(meta.classes)}, but checkpoint "
                        f"{checkpoint} was trained on {state['classes']}")
    dev = select_device(device)
    model = load_model(state, checkpoint, dev)
    evaluated = (state.get("spec") or {}).get("eval", {})
    if tta is None:
        tta = int(evaluated.get("tta", 0))
    if tta_threshold is None and tta:
        tta_threshold = evaluated.get("tta_threshold")
    if tta_threshold is not None and not tta:
        raise UserError(f"--tta-threshold {tta_threshold} selects images for test-time "
                        "augmentation, which is off (pass --tta 1 or 2)")
    norm = state["normalization"]
    test = build_loader(DataConfig(dir=data_dir, loader=loader), AugmentConfig(kind="none"),
                        split="test", batch_size=batch_size or DEFAULT_BATCH_SIZE, train=False,
                        rank=0, world_size=1, seed=0, device=dev, mean=norm["mean"],
                        std=norm["std"])
    result = evaluate(model, test, num_classes=state["num_classes"],
                      amp_dtype=resolve_amp(amp or state["amp"], dev), device=dev, tta=tta,
                      tta_threshold=tta_threshold)
    out = result.metrics()
    out.update(model=state["model"], epoch=state["epoch"], classes=state["classes"],
               checkpoint=str(checkpoint), data=str(data_dir))
    return out


def evaluate_scratch_checkpoint(checkpoint: Path, data_dir: Path, *,
                                batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of a NumPy engine `.npz` on `data_dir`'s test split, computed by the NumPy
    trainer's own `evaluate` with the checkpoint's dtype, normalisation and eval.batch_size,
    so `scratch_best.npz` reproduces `summary.json`'s `best`."""
    from ddpcifar.data.beton import read_split
    from ddpcifar.data.meta import load_meta
    from ddpcifar.scratch.augment import Normalizer
    from ddpcifar.scratch.trainer import evaluate as evaluate_numpy

    net, saved = load_scratch(checkpoint)
    meta = load_meta(data_dir, verify_sha256=True)
    if net.num_outputs != len(meta.classes):
        raise UserError(f"{data_dir} has {len(meta.classes)} classes, but checkpoint "
                        f"{checkpoint} has {net.num_outputs} outputs")
    images, labels = read_split(data_dir, "test")
    if tuple(images.shape[1:]) != tuple(net.input_shape):
        raise UserError(f"{data_dir} has images of shape {tuple(images.shape[1:])}, but "
                        f"checkpoint {checkpoint} takes {tuple(net.input_shape)}")
    # A file saved before the normalisation was: the data's own, which the run used if it
    # trained on this directory.
    normalize = Normalizer(saved.get("mean", tuple(meta.mean)), saved.get("std", tuple(meta.std)),
                           net.dtype)
    result = evaluate_numpy(net, images, labels, normalize, len(meta.classes),
                            batch_size or saved.get("eval_batch_size", DEFAULT_BATCH_SIZE))
    out = result.metrics()
    out.update(model=SCRATCH_MODEL, epoch=saved.get("epoch"), classes=list(meta.classes),
               checkpoint=str(checkpoint), data=str(data_dir))
    return out


def _print_table(m: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    epoch = "?" if m["epoch"] is None else m["epoch"]
    console.print(f"[bold]{m['model']}[/] epoch {epoch} on {m['data']} ({m['count']} images): "
                  f"loss {m['loss']:.4f}  top1 {m['top1']:.2%}  top3 {m['top3']:.2%}  "
                  f"top5 {m['top5']:.2%}"
                  + (f"  top1 TTA{m['tta']} {m['top1_tta']:.2%} ({m['tta_images']} images "
                     "augmented)" if "top1_tta" in m else ""))
    table = Table("class", "accuracy", "most confused with")
    for i, (name, acc) in enumerate(zip(m["classes"], m["per_class"])):
        row = list(m["confusion"][i])
        row[i] = -1
        other = max(range(len(row)), key=row.__getitem__)
        table.add_row(name, f"{acc:.1%}", f"{m['classes'][other]} ({row[other]})")
    console.print(table)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpcifar.evaluate",
                                     description="Evaluate a ddpcifar checkpoint on a prepared "
                                                 "dataset's test split.")
    parser.add_argument("checkpoint", type=Path,
                        help="a .pt written by ddpcifar.train, or a NumPy engine .npz "
                             "(checkpoints/scratch_best.npz, scratch_final.npz)")
    parser.add_argument("--data", type=Path, required=True,
                        help="prepared data directory (data_prep.py --out)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--batch-size", type=int,
                        help="default: 1000; for a .npz the run's eval.batch_size")
    parser.add_argument("--loader", choices=("memory", "ffcv"), default="memory",
                        help="torch checkpoints only")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="a .npz evaluates on the CPU")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"),
                        help="autocast dtype (default: the one the run trained with); torch "
                             "checkpoints only")
    parser.add_argument("--tta", type=int, choices=(0, 1, 2),
                        help="test-time augmentation level for top1_tta (default: the run's "
                             "eval.tta): 0 none, 1 mirror, 2 mirror + 1-pixel translations; "
                             "a .npz: 0 only")
    parser.add_argument("--tta-threshold", type=float, metavar="P",
                        help="selective TTA: the augmented views only for the predictions whose "
                             "confidence (max softmax probability) is at most P; 1.0 is full "
                             "TTA, a negative P none; tta_images counts them (default: the "
                             "run's eval.tta_threshold)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    metrics = evaluate_checkpoint(args.checkpoint, args.data, batch_size=args.batch_size,
                                  loader=args.loader, device=args.device, amp=args.amp,
                                  tta=args.tta, tta_threshold=args.tta_threshold)
    if args.json:
        keys = ("top1", "top1_tta", "tta_images", "top3", "top5", "loss", "per_class",
                "confusion", "count", "model", "epoch", "classes")
        keys = tuple(k for k in keys if k in metrics)
        print(json.dumps({k: metrics[k] for k in keys}, indent=2))
    else:
        _print_table(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
