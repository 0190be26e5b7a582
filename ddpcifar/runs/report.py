"""Reporting one run, the same for both engines: evaluations, the best one, samples, summary, end.

An engine computes; a `Reporter` decides what that means for the run directory. It logs each
evaluation, keeps the misclassified samples, tracks the best evaluation (lowest validation loss
when the run has a validation split, else lowest test loss), keeps status.json current, writes
summary.json in its one schema (`SHARED_SUMMARY_KEYS`, docs/run_directory.md) and ends the run
in its final state with a one-line reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ddpcifar.errors import UserError
from ddpcifar.metrics import EvalResult
from ddpcifar.runs import states
from ddpcifar.runs.rundir import FORMAT_VERSION, spread_by_class

# Every summary.json carries these keys, with these types, whichever engine wrote it. Engine
# extras sit beside them (docs/run_directory.md lists both). None is allowed where marked.
SHARED_SUMMARY_KEYS: dict[str, tuple[type, ...]] = {
    "format": (int,),
    "name": (str,),
    "model": (str,),
    "engine": (str,),
    "state": (str,),
    "classes": (list,),
    "world_size": (int,),
    "epochs": (int, float),  # as the spec says (possibly fractional)
    "epochs_done": (int,),
    "steps": (int,),
    "parameters": (int,),
    "wall_time_s": (float,),
    "train_time_s": (float,),
    "images_per_s": (float, type(None)),
    "timing": (dict,),  # train_s, final_eval_s, time_to_accuracy_s (+ engine parts)
    "best": (dict, type(None)),  # the selected evaluation + epoch, checkpoint, selected_by
    "final": (dict, type(None)),  # the last evaluation + epoch
    "val": (dict, type(None)),  # validation metrics of the last evaluation, if a split
    "checkpoint": (str, type(None)),  # the final weights, relative to the run directory
}
TIMING_KEYS = ("train_s", "final_eval_s", "time_to_accuracy_s")
VAL_KEYS = ("loss", "top1", "top3", "top5", "count")


class RunWriter(Protocol):
    """The part of ddpcifar.runs.rundir.RunDir / NullRunDir a Reporter uses."""

    path: Path

    @property
    def is_writer(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...
    def elapsed(self) -> float: ...
    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None: ...
    def write_status(self, **changes: Any) -> None: ...
    def write_samples(self, epoch: int, **arrays: Any) -> Any: ...
    def write_summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self, state: str = ..., error: str | None = None) -> None: ...


@dataclass(frozen=True)
class Evaluated:
    """What reporting one evaluation decided."""

    improved: bool  # the new best: the engine saves its best checkpoint now
    samples: np.ndarray  # the misclassified images kept (N, 32, 32, 3) uint8


def val_values(val: EvalResult | None) -> dict[str, Any]:
    """Validation metrics as they appear in an eval line: `val_loss`, `val_top1`, ..."""
    if val is None:
        return {}
    metrics = val.metrics()
    return {f"val_{k}": metrics[k] for k in VAL_KEYS}


def one_line(err: BaseException) -> str:
    """An exception as the one-line reason status.json keeps."""
    text = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    return (text.splitlines() or [type(err).__name__])[0][:300]


class Reporter:
    """Reports one run through `run` (a real writer on rank 0, a null one elsewhere)."""

    def __init__(self, run: RunWriter, *, max_samples: int,
                 sample_images: Callable[[np.ndarray], np.ndarray],
                 best: dict[str, Any] | None = None) -> None:
        self.run = run
        self.max_samples = max_samples
        self.sample_images = sample_images  # test-split positions -> HWC uint8 images
        self.best = best
        self.last: dict[str, Any] | None = None  # the latest evaluation, as in summary `final`
        self.last_val: dict[str, Any] | None = None

    def evaluation(self, *, epoch: int, step: int, result: EvalResult, val: EvalResult | None,
                   train_loss: float, train_top1: float, checkpoint: str | None,
                   images_per_s: float | None) -> Evaluated:
        """Log one evaluation, keep its samples, update best and status. Every rank calls it."""
        metrics = result.metrics()
        values = {**metrics, **val_values(val), "train_loss": train_loss, "train_top1": train_top1}
        self.run.log("eval", epoch=epoch, step=step, values=values)
        samples = self._write_samples(epoch, result) if self.run.is_writer else _no_images()
        selected_by = "val_loss" if val is not None else "test_loss"
        score = val.loss if val is not None else result.loss
        improved = self.best is None or score < _score(self.best)
        self.last = {"epoch": epoch, **metrics}
        self.last_val = {"epoch": epoch, **{k: val.metrics()[k] for k in VAL_KEYS}} if val else None
        if improved:
            self.best = {"epoch": epoch, **metrics, **val_values(val), "checkpoint": checkpoint,
                         "selected_by": selected_by}
        status: dict[str, Any] = {"epoch": epoch, "best_top1": self.best["top1"],
                                  "last_top1": result.top1, "images_per_s": images_per_s}
        if result.top1_tta is not None:
            status["top1_tta"] = result.top1_tta
        if val is not None:
            status["val_top1"] = val.top1
        self.run.write_status(**status)
        return Evaluated(improved, samples)

    def _write_samples(self, epoch: int, result: EvalResult) -> np.ndarray:
        keep = spread_by_class([r[1] for r in result.misclassified], self.max_samples)
        rows = [result.misclassified[i] for i in keep]
        index = np.array([r[0] for r in rows], dtype=np.int64)
        images = self.sample_images(index) if len(rows) else _no_images()
        self.run.write_samples(epoch, images=np.ascontiguousarray(images),
                               true=np.array([r[1] for r in rows], dtype=np.int64),
                               pred=np.array([r[2] for r in rows], dtype=np.int64),
                               confidence=np.array([r[3] for r in rows], dtype=np.float32),
                               index=index)
        return images

    def summary(self, *, state: str, epochs: float, epochs_done: int, steps: int,
                parameters: int, train_time_s: float, images_per_s: float | None,
                timing: dict[str, float], checkpoint: str | None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write summary.json in the shared schema (plus engine `extra` keys); returns it."""
        missing = [k for k in TIMING_KEYS if k not in timing]
        if missing:
            raise ValueError(f"summary timing lacks {missing}")
        status = self.run.status()
        body: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "name": status.get("name"),
            "model": status.get("model"),
            "engine": status.get("engine"),
            "state": state,
            "classes": status.get("classes"),
            "world_size": status.get("world_size"),
            "epochs": int(epochs) if float(epochs).is_integer() else float(epochs),
            "epochs_done": int(epochs_done),
            "steps": int(steps),
            "parameters": int(parameters),
            "wall_time_s": round(float(self.run.elapsed()), 3),
            "train_time_s": round(float(train_time_s), 3),
            "images_per_s": None if images_per_s is None else float(images_per_s),
            "timing": {k: round(float(v), 3) for k, v in timing.items()},
            "best": self.best,
            "final": self.last,
            "val": self.last_val,
            "checkpoint": checkpoint,
        }
        body.update(extra or {})
        self.run.write_summary(body)
        return body

    def end(self, state: str, error: str | None = None) -> None:
        """Mark the run ended (finished, stopped, pruned or failed), close its log, then write
        its model card (ddpcifar.card; the writing rank only, after the state is on disk, and a
        card that fails is a warning: it never changes or hides how the run ended)."""
        if state not in states.ENDED:
            raise ValueError(f"not an end state: {state}")
        self.run.finish(state, error=error)
        if self.run.is_writer:
            from ddpcifar.card import write_card_quietly  # matplotlib loads here, at the end

            write_card_quietly(self.run.path)

    def fail(self, err: BaseException | str) -> None:
        """Mark the run failed with a one-line reason (the error itself propagates)."""
        self.end(states.FAILED, err if isinstance(err, str) else one_line(err))


def _score(best: dict[str, Any]) -> float:
    """What a best evaluation is compared by (checkpoints older than `selected_by`: test loss)."""
    key = "val_loss" if best.get("selected_by") == "val_loss" else "loss"
    value = best.get(key)
    return float(value) if isinstance(value, (int, float)) else math.inf


def _no_images() -> np.ndarray:
    return np.zeros((0, 32, 32, 3), np.uint8)
