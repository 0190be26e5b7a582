"""`python -m tui export RUN_DIR --out DIR`: the dashboard's charts as PNG files.

The drawing is ddpcifar.charts (matplotlib, shared with the model card); this module reads the
run the way the dashboard does and picks what to draw. Every figure has a fixed size in pixels
(FIGURES) so reports and tests can rely on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ddpcifar import charts
from ddpcifar.atomic import write_bytes
from ddpcifar.errors import UserError
from ddpcifar.runs.reader import normalize_summary
from tui.metrics import Curves, MetricsLog, MetricsTail, ema, latest_evaluation
from tui.samples import SamplesError, load_samples, sample_epochs

# name -> (width, height) in pixels
FIGURES = {"loss": (1000, 600), "accuracy": (1000, 600), "per_class": (1000, 600),
           "confusion": (900, 800), "misclassified": (1600, 1200)}
GRID_COLS, GRID_ROWS = 8, 5
SMOOTH_FROM = 100  # train points needed before a smoothed line is drawn over the raw one


def _save(png: bytes, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    write_bytes(path, png)
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        print(f"warning: {path}: unreadable ({err})", file=sys.stderr)
        return {}
    return value if isinstance(value, dict) else {}


def _curve_lines(curves: Curves, train: np.ndarray, test: np.ndarray,
                 scale: float) -> list[charts.Line]:
    lines = []
    if len(train) >= SMOOTH_FROM:
        lines += [charts.Line(curves.train_epoch, train * scale, "train (raw)", charts.TRAIN_RAW,
                              width=1),
                  charts.Line(curves.train_epoch, ema(train, 0.9) * scale, "train (EMA 0.9)",
                              charts.TRAIN)]
    elif len(train):  # too few points for an EMA that does not lag visibly
        lines.append(charts.Line(curves.train_epoch, train * scale, "train", charts.TRAIN))
    lines.append(charts.Line(curves.eval_epoch, test * scale, "test", charts.TEST, marker="o"))
    return lines


def export_run(run_dir: Path, out: Path, *, epoch: int | None = None) -> list[Path]:
    """Write the PNGs for one run directory into `out`; returns the paths written."""
    run_dir = Path(run_dir)
    if not (run_dir / "status.json").is_file() and not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"not a run directory (no status.json or metrics.jsonl): {run_dir}")
    out.mkdir(parents=True, exist_ok=True)
    status = _read_json(run_dir / "status.json")
    summary = normalize_summary(_read_json(run_dir / "summary.json")) or {}
    classes = status.get("classes") or summary.get("classes") or []
    name = status.get("name") or run_dir.name

    tail = MetricsTail(run_dir / "metrics.jsonl")
    result = tail.read_all()
    log = MetricsLog()
    log.add(result.records)
    curves = log.curves()
    for bad in result.bad_lines[:5]:
        print(f"warning: metrics.jsonl {bad}: skipped", file=sys.stderr)

    written: list[Path] = []
    if curves.empty:
        print(f"warning: {run_dir}: no metrics yet, skipping curves", file=sys.stderr)
    else:
        written.append(_save(charts.curves_png(
            f"{name}: loss", "cross-entropy",
            _curve_lines(curves, curves.train_loss, curves.eval_loss, 1.0), FIGURES["loss"]),
            out, "loss"))
        written.append(_save(charts.curves_png(
            f"{name}: top-1 accuracy", "top-1 (%)",
            _curve_lines(curves, curves.train_top1, curves.eval_top1, 100.0),
            FIGURES["accuracy"]), out, "accuracy"))

    evaluation = latest_evaluation(curves.last_eval, summary)
    if evaluation is None:
        print(f"warning: {run_dir}: no evaluation yet, skipping per-class and confusion",
              file=sys.stderr)
    else:
        labels = [classes[i] if i < len(classes) else str(i)
                  for i in range(len(evaluation.per_class))]
        written.append(_save(charts.per_class_png(
            f"{name}: per-class accuracy (epoch {evaluation.epoch})", labels,
            evaluation.per_class, FIGURES["per_class"]), out, "per_class"))
        written.append(_save(charts.confusion_png(
            f"{name}: confusion matrix (epoch {evaluation.epoch})", labels,
            evaluation.confusion, FIGURES["confusion"]), out, "confusion"))

    epochs = sample_epochs(run_dir)
    if epoch is not None and epoch not in epochs:
        raise UserError(f"no samples archive for epoch {epoch} in {run_dir}/samples "
                        f"(have: {epochs or 'none'})")
    if epochs:
        try:
            samples = load_samples(run_dir, epoch if epoch is not None else epochs[-1])
        except SamplesError as err:
            raise UserError(f"{run_dir}: {err}") from None
        n = min(len(samples), GRID_COLS * GRID_ROWS)
        captions = [charts.caption(classes, int(t), int(p), float(c)) for t, p, c in
                    zip(samples.true[:n], samples.pred[:n], samples.confidence[:n])]
        written.append(_save(charts.samples_png(
            f"{name}: misclassified test images, epoch {samples.epoch} "
            f"(first {n} of {len(samples)})", samples.images[:n], captions,
            FIGURES["misclassified"], cols=GRID_COLS, rows=GRID_ROWS), out, "misclassified"))
    else:
        print(f"warning: {run_dir}: no samples yet, skipping misclassified", file=sys.stderr)
    return written
