"""Export a checkpoint for inference outside ddpcifar: ONNX, TorchScript or torch.export (.pt2).

    python -m ddpcifar.export runs/resnet9/checkpoints/best.pt --format onnx --out resnet9.onnx \\
        --data data/cifar10

The file takes raw RGB uint8 images, NHWC (N, 32, 32, 3) with a dynamic batch, normalisation
inside; FILE.json beside it describes input, output and the parity check that every export
passes before anything is written. See docs/inference.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ddpcifar.errors import UserError, cli_main
from ddpcifar.inference.checkpoints import is_scratch_checkpoint, load_torch_state
from ddpcifar.inference.export_log import append_export, read_exports, run_dir_of
from ddpcifar.inference.output import StagedFiles, check_writable
from ddpcifar.inference.parity import DEFAULT_IMAGES, MAX_ABS_DIFF, MIN_TOP1_AGREEMENT, Parity

if TYPE_CHECKING:
    import numpy as np

    from ddpcifar.inference.formats import Runtime

FORMAT_NAMES = ("onnx", "torchscript", "pt2")  # ddpcifar.inference.formats.FORMATS, without torch

EXAMPLES = """\
examples:
  python -m ddpcifar.export runs/resnet9/checkpoints/best.pt --format onnx --out resnet9.onnx --data data/cifar10
  python -m ddpcifar.export runs/era_s9/checkpoints/best.pt --format torchscript --out era_s9.ts
  python -m ddpcifar.export runs/airbench/checkpoints/best.pt --format pt2 --out airbench.pt2
"""


def export_checkpoint(checkpoint: Path, fmt: str, out: Path, *, data_dir: Path | None = None,
                      parity_images: int = DEFAULT_IMAGES,
                      say: Callable[[str], None] = print) -> dict[str, Any]:
    """Export `checkpoint` as `fmt` to `out` with `out`.json beside it, after a parity check;
    record it in the run directory's exports.json when there is one. Returns the description.

    Nothing is left behind on failure: the file is written under a temporary name, checked in
    its own runtime, and only then renamed, together with its description.
    """
    description_path = out.with_name(out.name + ".json")
    for path in (out, description_path):
        check_writable(path)
    if out.resolve() == checkpoint.resolve():
        raise UserError(f"--out {out} is the checkpoint itself")
    if fmt == "pt2" and out.suffix != ".pt2":
        raise UserError(f"--format pt2 needs an --out ending in .pt2 (torch.export.load reads "
                        f"only those), got {out}")
    if checkpoint.is_file() and is_scratch_checkpoint(checkpoint):
        raise UserError(f"cannot export {checkpoint}: NumPy engine .npz checkpoints are not "
                        "exportable (use python -m ddpcifar.predict with it)")
    state = load_torch_state(checkpoint)

    from ddpcifar.inference.formats import REFUSED

    model = state["model"]
    if (model, fmt) in REFUSED:
        raise UserError(f"cannot export model {model} as {fmt}: {REFUSED[(model, fmt)]}")
    run_dir = run_dir_of(checkpoint)
    if run_dir is not None:
        read_exports(run_dir)  # a damaged exports.json fails now, before any work

    from ddpcifar.inference.parity import parity_images as make_images

    images, source = make_images(parity_images, data_dir)
    say(f"exporting {model} (epoch {state.get('epoch')}) from {checkpoint} as {fmt}")
    staged = StagedFiles(out, description_path)
    try:
        exported = _export_and_check(checkpoint, state, fmt, staged.temp(out), images, source)
        parity, runtime = exported.parity, exported.runtime
        say(f"parity ({runtime.name} {runtime.version} vs PyTorch fp32 eager): "
            f"{parity.summary()}")
        if not parity.passed:
            raise UserError(f"parity check failed for {model} as {fmt}, nothing written: "
                            f"{parity.summary()}")
        description = _describe(checkpoint, state, fmt, out, staged.temp(out), exported)
        staged.write_text(description_path, json.dumps(description, indent=2) + "\n")
        staged.commit()
    finally:
        staged.discard()
    if run_dir is not None:
        entry = {key: description[key] for key in ("format", "path", "bytes", "sha256",
                                                   "parity", "time", "model", "checkpoint")}
        try:
            log = append_export(run_dir, entry)
        except UserError:
            out.unlink(missing_ok=True)
            description_path.unlink(missing_ok=True)
            raise
        say(f"recorded in {log}")
    say(f"wrote {out} ({description['bytes'] / 1e6:.1f} MB) and {description_path}")
    return description


@dataclass(frozen=True)
class _Exported:
    """A staged export: how it was written, its runtime, its parity, what it outputs."""

    how: dict[str, Any]
    runtime: Runtime
    parity: Parity
    log_probs: bool


def _export_and_check(checkpoint: Path, state: dict[str, Any], fmt: str, path: Path,
                      images: np.ndarray, source: str) -> _Exported:
    """Write the graph to `path`, load it in its runtime, measure parity on `images`."""
    import torch

    from ddpcifar.engine.state import load_model
    from ddpcifar.inference.checkpoints import load_torch_classifier
    from ddpcifar.inference.formats import load_runtime, write_format
    from ddpcifar.inference.graph import RawImageModel
    from ddpcifar.inference.parity import measure

    cpu = torch.device("cpu")
    reference = load_torch_classifier(checkpoint, state, device="cpu", amp="off")
    model = load_model(state, checkpoint, cpu).to(memory_format=torch.contiguous_format).eval()
    norm = state["normalization"]
    try:
        how = write_format(RawImageModel(model, norm["mean"], norm["std"]), fmt, path)
        runtime = load_runtime(fmt, path)
    except Exception as err:  # exporters raise many types, with long multi-line messages
        lines = str(err).strip().splitlines()
        reason = lines[0][:200] if lines else type(err).__name__
        raise UserError(f"cannot export model {state['model']} as {fmt}: {reason}") from None
    return _Exported(how, runtime, measure(reference.logits, runtime.run, images, source),
                     reference.outputs_log_probs)


def _describe(checkpoint: Path, state: dict[str, Any], fmt: str, out: Path, staged: Path,
              exported: _Exported) -> dict[str, Any]:
    """FILE.json: what the file takes and returns, where it came from, its parity."""
    from ddpcifar.inference.graph import IMAGE_SHAPE, INPUT_LAYOUT, INPUT_NAME

    log_probs = exported.log_probs
    norm = state["normalization"]
    data = staged.read_bytes()
    return {
        "format": fmt,
        "path": str(out.resolve()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": state["model"],
        "epoch": state.get("epoch"),
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "input": {
            "name": INPUT_NAME, "dtype": "uint8", "layout": INPUT_LAYOUT,
            "shape": ["batch", *IMAGE_SHAPE], "channels": "RGB", "range": [0, 255],
            "normalization": {"inside": True, "mean": list(norm["mean"]),
                              "std": list(norm["std"]), "units": "0..255"},
        },
        "output": {
            "name": "log_probs" if log_probs else "logits",
            "kind": "log_probs" if log_probs else "logits",
            "dtype": "float32", "shape": ["batch", state["num_classes"]],
            "classes": list(state["classes"]),
            "probabilities": "softmax(output, axis=1)",
        },
        "exporter": exported.how,
        "runtime": {"name": exported.runtime.name, "version": exported.runtime.version},
        "parity": exported.parity.record(),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpcifar.export", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a torch checkpoint as one file that takes raw RGB uint8 images "
                    "(NHWC, dynamic batch, normalisation inside), plus FILE.json describing "
                    "it. A parity check against PyTorch fp32 eager runs first: outside the "
                    f"tolerance (max |logit difference| <= {MAX_ABS_DIFF:g}, top-1 agreement "
                    f">= {MIN_TOP1_AGREEMENT:.1%}) "
                    "nothing is written. An export of a run directory's checkpoint is recorded "
                    "in its exports.json.")
    parser.add_argument("checkpoint", type=Path,
                        help="a .pt written by ddpcifar.train (NumPy engine .npz files are "
                             "refused)")
    parser.add_argument("--format", required=True, choices=FORMAT_NAMES,
                        help="onnx (ONNX Runtime), torchscript (torch.jit.load) or pt2 "
                             "(torch.export.load)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the file to write; its description goes to OUT.json")
    parser.add_argument("--data", type=Path,
                        help="prepared data directory: parity runs on its test split (default: "
                             "seeded random uint8 images)")
    parser.add_argument("--parity-images", type=int, default=DEFAULT_IMAGES,
                        help=f"images for the parity check (default: {DEFAULT_IMAGES}; the test "
                             "split is topped up with random images when smaller)")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.parity_images < 1:
        raise UserError(f"--parity-images must be >= 1, got {args.parity_images}")
    export_checkpoint(args.checkpoint, args.format, args.out, data_dir=args.data,
                      parity_images=args.parity_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
