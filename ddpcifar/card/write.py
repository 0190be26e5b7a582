"""Writing MODEL_CARD.md and its images into a run directory, and the end-of-run hook.

Everything is rendered in memory first (the PNG bytes and the markdown), so a problem with the
run's files or with drawing changes nothing on disk. Then each image is replaced atomically
under `card/`, the markdown last, and images the new card no longer links are removed: a reader
never sees a half-written file, and the card only links images that exist.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ddpcifar import charts
from ddpcifar.atomic import write_bytes
from ddpcifar.card.facts import RunFacts, read_facts
from ddpcifar.card.markdown import render
from ddpcifar.errors import UserError
from ddpcifar.runs.reader import short

CARD = "MODEL_CARD.md"
IMAGES_DIR = "card"
# Small on purpose: a card is drawn at the end of every run and must take well under 2 s.
SIZES = {"loss": (800, 450), "accuracy": (800, 450), "confusion": (640, 560),
         "misclassified": (1120, 700)}
GRID_COLS, GRID_ROWS = 10, 4


def write_card(run_dir: str | os.PathLike) -> Path:
    """Write `run_dir`/MODEL_CARD.md and `card/*.png`; returns the card's path.

    Raises a one-line UserError for bad input (not a run directory, an unreadable file, a
    directory that cannot be written), leaving the previous card as it was.
    """
    facts = read_facts(run_dir)
    path = facts.path
    folder = path / IMAGES_DIR
    for target in (path, folder):
        if target.exists() and not target.is_dir():
            raise UserError(f"cannot write the model card in {path}: {target} is not a directory")
        if target.exists() and not os.access(target, os.W_OK | os.X_OK):
            raise UserError(f"cannot write the model card in {path}: {target} is not writable")
    images = draw(facts)
    text = render(facts, {name: f"{IMAGES_DIR}/{name}.png" for name in images})
    try:
        if images:
            folder.mkdir(exist_ok=True)
        for name, png in images.items():
            write_bytes(folder / f"{name}.png", png)
        write_bytes(path / CARD, text.encode("utf-8"))
        for stale in folder.glob("*.png"):  # none when the folder is absent
            if stale.stem not in images:
                stale.unlink(missing_ok=True)
    except OSError as err:
        raise UserError(f"cannot write the model card in {path}: "
                        f"{(err.strerror or short(err)).lower()}"
                        + (f" ({err.filename})" if err.filename else "")) from None
    return path / CARD


def write_card_quietly(run_dir: str | os.PathLike) -> Path | None:
    """`write_card` for the end of a run: a failure is one warning line on stderr, never an
    exception, so the card can neither fail nor hide how the run itself ended."""
    try:
        return write_card(run_dir)
    except Exception as err:  # noqa: BLE001 - whatever went wrong, the run's outcome stands
        reason = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {short(err)}"
        print(f"warning: no model card for {run_dir}: {reason}", file=sys.stderr, flush=True)
        return None


def draw(facts: RunFacts) -> dict[str, bytes]:
    """The card's charts as PNG bytes, by name; only those the run has data for."""
    name, history, classes = facts.name, facts.history, facts.classes
    out: dict[str, bytes] = {}
    if len(history.train_epoch) or len(history.eval_epoch):
        for key, title, ylabel, scale in (("loss", "loss", "cross-entropy", 1.0),
                                          ("accuracy", "top-1 accuracy", "top-1 (%)", 100.0)):
            metric = "loss" if key == "loss" else "top1"
            ev = history.eval
            lines = [
                charts.Line(history.train_epoch, getattr(history, f"train_{metric}") * scale,
                            "train (logged steps)", charts.TRAIN_RAW, width=1),
                charts.Line(history.eval_epoch, ev[f"train_{metric}"] * scale,
                            "train (epoch mean)", charts.TRAIN, marker="o"),
                charts.Line(history.eval_epoch, ev[metric] * scale, "test", charts.TEST,
                            marker="o"),
            ]
            if np.isfinite(ev[f"val_{metric}"]).any():
                lines.append(charts.Line(history.eval_epoch, ev[f"val_{metric}"] * scale,
                                         "validation", charts.VAL, marker="o"))
            out[key] = charts.curves_png(f"{name}: {title}", ylabel, lines, SIZES[key])
    final = facts.final or {}
    confusion = final.get("confusion")
    if isinstance(confusion, list) and confusion:
        labels = [classes[i] if i < len(classes) else str(i) for i in range(len(confusion))]
        out["confusion"] = charts.confusion_png(
            f"{name}: confusion matrix (epoch {final.get('epoch')})", labels, confusion,
            SIZES["confusion"])
    samples = facts.samples
    if samples is not None and len(samples.true):
        n = min(len(samples.true), GRID_COLS * GRID_ROWS)
        captions = [charts.caption(classes, int(t), int(p), float(c)) for t, p, c in
                    zip(samples.true[:n], samples.pred[:n], samples.confidence[:n])]
        out["misclassified"] = charts.samples_png(
            f"{name}: misclassified test images, epoch {samples.epoch}", samples.images[:n],
            captions, SIZES["misclassified"], cols=GRID_COLS, rows=GRID_ROWS)
    return out
