"""`python -m tui export RUN_DIR --out DIR`: the dashboard's charts as PNG files, via matplotlib (Agg).

Every figure has a fixed size in pixels (FIGURES) so reports and tests can rely on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ddpcifar.errors import UserError
from ddpcifar.runs.reader import normalize_summary
from tui.metrics import Curves, MetricsLog, MetricsTail, ema, latest_evaluation
from tui.samples import SamplesError, caption, load_samples, sample_epochs

DPI = 100
# name -> (width, height) in pixels
FIGURES = {"loss": (1000, 600), "accuracy": (1000, 600), "per_class": (1000, 600),
           "confusion": (900, 800), "misclassified": (1600, 1200)}
GRID_COLS, GRID_ROWS = 8, 5
SMOOTH_FROM = 100  # train points needed before a smoothed line is drawn over the raw one


def _figure(name: str) -> Any:
    import matplotlib.pyplot as plt

    w, h = FIGURES[name]
    return plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def _save(fig: Any, out: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": it would change the pixel size
    plt.close(fig)
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


def _curve_figure(name: str, title: str, curves: Curves, train: np.ndarray, test: np.ndarray,
                  ylabel: str, scale: float) -> Any:
    fig = _figure(name)
    ax = fig.add_subplot()
    if len(train) >= SMOOTH_FROM:
        ax.plot(curves.train_epoch, train * scale, color="#9ecae1", lw=1, label="train (raw)")
        ax.plot(curves.train_epoch, ema(train, 0.9) * scale, color="#1f77b4", lw=2,
                label="train (EMA 0.9)")
    elif len(train):  # too few points for an EMA that does not lag visibly
        ax.plot(curves.train_epoch, train * scale, color="#1f77b4", lw=2, label="train")
    if len(test):
        ax.plot(curves.eval_epoch, test * scale, "o-", color="#ff7f0e", lw=2, ms=4, label="test")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()  # rearranges within the figure; the pixel size stays fixed
    return fig


def export_run(run_dir: Path, out: Path, *, epoch: int | None = None) -> list[Path]:
    """Write the PNGs for one run directory into `out`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
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
        written.append(_save(_curve_figure("loss", f"{name}: loss", curves, curves.train_loss,
                                           curves.eval_loss, "cross-entropy", 1.0), out, "loss"))
        written.append(_save(_curve_figure("accuracy", f"{name}: top-1 accuracy", curves,
                                           curves.train_top1, curves.eval_top1, "top-1 (%)",
                                           100.0), out, "accuracy"))

    evaluation = latest_evaluation(curves.last_eval, summary)
    if evaluation is None:
        print(f"warning: {run_dir}: no evaluation yet, skipping per-class and confusion",
              file=sys.stderr)
    else:
        labels = [classes[i] if i < len(classes) else str(i) for i in range(len(evaluation.per_class))]
        written.append(_save(_per_class_figure(name, labels, evaluation.per_class,
                                               evaluation.epoch), out, "per_class"))
        written.append(_save(_confusion_figure(name, labels, evaluation.confusion,
                                               evaluation.epoch), out, "confusion"))

    epochs = sample_epochs(run_dir)
    if epoch is not None and epoch not in epochs:
        raise UserError(f"no samples archive for epoch {epoch} in {run_dir}/samples "
                        f"(have: {epochs or 'none'})")
    if epochs:
        try:
            samples = load_samples(run_dir, epoch if epoch is not None else epochs[-1])
        except SamplesError as err:
            raise UserError(f"{run_dir}: {err}") from None
        written.append(_save(_samples_figure(name, samples, classes), out, "misclassified"))
    else:
        print(f"warning: {run_dir}: no samples yet, skipping misclassified", file=sys.stderr)
    return written


def _per_class_figure(name: str, labels: list[str], per_class: list[float],
                      epoch: int | None) -> Any:
    import matplotlib.pyplot as plt

    fig = _figure("per_class")
    ax = fig.add_subplot()
    values = np.asarray(per_class) * 100
    y = np.arange(len(values))[::-1]
    colors = plt.get_cmap("RdYlGn")(np.clip(values / 100, 0, 1))
    ax.barh(y, values, color=colors, edgecolor="#333333", lw=0.5)
    ax.set_yticks(y, labels)
    for yi, v in zip(y, values):
        ax.text(min(v + 1, 92), yi, f"{v:.1f}%", va="center")
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title(f"{name}: per-class accuracy (epoch {epoch})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _confusion_figure(name: str, labels: list[str], confusion: list[list[int]],
                      epoch: int | None) -> Any:
    fig = _figure("confusion")
    ax = fig.add_subplot()
    m = np.asarray(confusion, dtype=np.float64)
    off = m.copy()
    np.fill_diagonal(off, np.nan)  # errors on their own scale, so small confusions are visible
    ax.imshow(off, cmap="Reds", vmin=0)
    diag = np.full_like(m, np.nan)
    np.fill_diagonal(diag, m.diagonal())
    ax.imshow(diag, cmap="Greens", vmin=0, vmax=max(1.0, float(m.diagonal().max())))
    high = np.nanmax(off) if np.isfinite(off).any() else 1.0
    for (i, j), count in np.ndenumerate(m):
        strong = (i == j) or count > 0.6 * high
        ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8,
                color="white" if strong else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: confusion matrix (epoch {epoch})")
    fig.tight_layout()
    return fig


def _samples_figure(name: str, samples: Any, classes: list[str]) -> Any:
    fig = _figure("misclassified")
    n = min(len(samples), GRID_COLS * GRID_ROWS)
    axes = fig.subplots(GRID_ROWS, GRID_COLS)
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(samples.images[k], interpolation="nearest")
        text = caption(classes, int(samples.true[k]), int(samples.pred[k]),
                       float(samples.confidence[k]))
        ax.set_title(text.replace(" (", "\n("), fontsize=9)
    fig.suptitle(f"{name}: misclassified test images, epoch {samples.epoch} "
                 f"(first {n} of {len(samples)})")
    fig.tight_layout()
    return fig
