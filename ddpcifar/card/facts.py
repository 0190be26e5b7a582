"""What a model card says, read from the run directory's own files (docs/model_card.md).

Nothing is recomputed: the numbers are summary.json's when it describes the run's current end
(`load_summary`, which also reads older summaries), else the last evaluation in metrics.jsonl;
status.json says how the run ended, spec.json what it was, the data directory's meta.json
where its pixels came from, exports.json what was exported. Files a card cannot do without are
refused with a one-line UserError; what is merely missing (no evaluation yet, a data directory
that moved, a damaged samples archive) is stated in the card instead.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddpcifar.errors import UserError
from ddpcifar.inference.export_log import read_exports
from ddpcifar.runs import states
from ddpcifar.runs.reader import load_summary, short
from ddpcifar.runs.rundir import LAUNCH, METRICS, SPEC, STATUS

# A log longer than this has its train lines thinned to about this many (evaluations are all
# kept): a card is written at the end of every run, and a curve needs no more points.
MAX_TRAIN_POINTS = 4000
SAMPLES_DIR = "samples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class History:
    """Curves from metrics.jsonl (NaN where a line lacked a value)."""

    train_epoch: np.ndarray
    train_loss: np.ndarray
    train_top1: np.ndarray
    eval_epoch: np.ndarray
    eval: dict[str, np.ndarray]  # loss, top1, train_loss, train_top1, val_loss, val_top1
    last_eval: dict[str, Any] | None  # {"epoch": ..., **values} of the last eval line


@dataclass(frozen=True)
class DataSource:
    """The run's data directory and its meta.json, or why it cannot be read now."""

    dir: str | None  # as spec.json names it
    path: Path | None  # where meta.json was found
    meta: dict[str, Any] | None
    problem: str | None
    image_format: str | None = None  # "JPEG" or "PNG" for an image-folder source still present


@dataclass(frozen=True)
class Samples:
    """The misclassified test images of one evaluation (samples/epoch_NNNN.npz)."""

    epoch: int
    images: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray


@dataclass(frozen=True)
class RunFacts:
    path: Path
    status: dict[str, Any]
    summary: dict[str, Any] | None  # only when it describes the run's current end
    spec: dict[str, Any] | None
    history: History
    data: DataSource
    exports: list[dict[str, Any]]
    samples: Samples | None
    notes: list[str] = field(default_factory=list)  # what could not be read, for the card

    @property
    def name(self) -> str:
        return str(self.status.get("name") or self.path.name)

    @property
    def state(self) -> str:
        return str(self.status.get("state", "unknown"))

    @property
    def classes(self) -> list[str]:
        classes = self.status.get("classes") or (self.summary or {}).get("classes") or []
        return [str(c) for c in classes]

    @property
    def final(self) -> dict[str, Any] | None:
        """The last evaluation: summary.json's `final`, else metrics.jsonl's last eval line."""
        if self.summary is not None:
            return self.summary.get("final")
        return self.history.last_eval

    @property
    def final_source(self) -> str:
        return "summary.json" if self.summary is not None else "metrics.jsonl"

    @property
    def val(self) -> dict[str, Any] | None:
        """Validation metrics of the last evaluation, when the run holds a validation split."""
        if self.summary is not None:
            return self.summary.get("val")
        last = self.history.last_eval or {}
        if "val_top1" not in last:
            return None
        return {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")}


def read_json(path: Path, *, required: bool) -> Any:
    """Parsed JSON of `path`; None when absent and not `required`; a one-line UserError else."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        if required:
            raise UserError(f"not a run directory (no {path.name}): {path.parent}") from None
        return None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable ({short(err)})") from None


def read_facts(run_dir: str | os.PathLike) -> RunFacts:
    """Everything the card needs from `run_dir`; a one-line UserError for bad input."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    status = read_json(path / STATUS, required=True)
    if not isinstance(status, dict):
        raise UserError(f"{path / STATUS}: unreadable (not a JSON object)")
    summary = load_summary(path)
    if summary is not None and not _describes(summary, status):
        summary = None  # written by an earlier end (stopped, then resumed): out of date
    spec = read_json(path / SPEC, required=False)
    if spec is not None and not isinstance(spec, dict):
        raise UserError(f"{path / SPEC}: unreadable (not a JSON object)")
    notes: list[str] = []
    history = read_history(path / METRICS)
    final = summary.get("final") if summary else history.last_eval
    samples = None
    try:
        samples = read_samples(path, final.get("epoch") if isinstance(final, dict) else None)
    except UserError as err:
        notes.append(str(err))
    return RunFacts(path=path, status=status, summary=summary, spec=spec, history=history,
                    data=data_source(path, spec), exports=read_exports(path), samples=samples,
                    notes=notes)


def _describes(summary: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether summary.json is of the run's current end. A sweep prunes a trial by stopping it
    and then marking it pruned, so a stopped summary also describes a pruned run."""
    ends = (summary.get("state"), status.get("state"))
    return ends[0] == ends[1] or ends == (states.STOPPED, states.PRUNED)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else float("nan")


def read_history(path: Path) -> History:
    """Train and eval curves of metrics.jsonl; a half-written or bad line is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    except OSError as err:
        raise UserError(f"cannot read {path}: {(err.strerror or str(err)).lower()}") from None
    lines = raw.split(b"\n")
    stride = max(1, len(lines) // MAX_TRAIN_POINTS)
    train: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        is_eval = b'"eval"' in line
        if not line.strip() or (not is_eval and i % stride):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("values"), dict):
            continue
        if record.get("kind") == "train":
            train.append(record)
        elif record.get("kind") == "eval":
            evals.append(record)

    def column(records: list[dict[str, Any]], key: str, top: bool = False) -> np.ndarray:
        return np.array([_number(r.get(key) if top else r["values"].get(key)) for r in records],
                        dtype=np.float64)

    last = {"epoch": evals[-1].get("epoch"), **evals[-1]["values"]} if evals else None
    return History(
        train_epoch=column(train, "epoch", top=True), train_loss=column(train, "loss"),
        train_top1=column(train, "top1"), eval_epoch=column(evals, "epoch", top=True),
        eval={k: column(evals, k) for k in ("loss", "top1", "train_loss", "train_top1",
                                             "val_loss", "val_top1")},
        last_eval=last)


def read_samples(run_dir: Path, epoch: Any) -> Samples | None:
    """The samples archive of evaluation `epoch` (else the latest one); None when there is none."""
    folder = run_dir / SAMPLES_DIR
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return None
    epochs = sorted(int(n[6:-4]) for n in names
                    if n.startswith("epoch_") and n.endswith(".npz") and n[6:-4].isdigit())
    if not epochs:
        return None
    chosen = int(epoch) if isinstance(epoch, int) and epoch in epochs else epochs[-1]
    archive = folder / f"epoch_{chosen:04d}.npz"
    label = f"{SAMPLES_DIR}/{archive.name}"
    try:
        with np.load(archive, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("images", "true", "pred", "confidence")}
    except KeyError as err:
        raise UserError(f"{label}: missing array {err}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{label}: cannot read ({short(err)})") from None
    images = arrays["images"]
    n = len(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or any(
            arrays[k].shape != (n,) for k in ("true", "pred", "confidence")):
        raise UserError(f"{label}: arrays of the wrong shape or type")
    return Samples(epoch=chosen, images=images, true=arrays["true"], pred=arrays["pred"],
                   confidence=arrays["confidence"])


def data_source(run_dir: Path, spec: dict[str, Any] | None) -> DataSource:
    """The data directory named by the spec, looked up where the run was started from.

    meta.json is read as plain JSON (ddpcifar.data.meta validates with pydantic, which the
    NumPy engine's process must not load); the betons are not hashed again.
    """
    data = (spec or {}).get("data") if isinstance((spec or {}).get("data"), dict) else {}
    raw = data.get("dir") if isinstance(data, dict) else None
    if not isinstance(raw, str):
        return DataSource(None, None, None, "spec.json names no data directory")
    where = Path(raw)
    if not where.is_absolute():
        try:
            launch = read_json(run_dir / LAUNCH, required=False)
        except UserError:
            launch = None  # only a hint: fall back to the current directory
        cwd = launch.get("cwd") if isinstance(launch, dict) else None
        where = (Path(cwd) if isinstance(cwd, str) else Path.cwd()) / raw
    meta_path = where / "meta.json"
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        return DataSource(raw, None, None, f"the data directory {where} is not reachable any "
                                           f"more (no meta.json there)")
    except (OSError, ValueError) as err:
        return DataSource(raw, None, None, f"{meta_path} is unreadable ({short(err)})")
    if not isinstance(meta, dict):
        return DataSource(raw, None, None, f"{meta_path} is unreadable (not a JSON object)")
    return DataSource(raw, where, meta, None, image_format=_folder_format(meta))


def _folder_format(meta: dict[str, Any]) -> str | None:
    """JPEG or PNG for an image-folder source that is still there (its first image), else None."""
    source = meta.get("source")
    if not isinstance(source, dict) or source.get("kind") != "image-folder":
        return None
    try:
        train = Path(str(source.get("path"))) / "train"
        for class_dir in sorted(train.iterdir()):
            for entry in sorted(os.listdir(class_dir)):
                suffix = Path(entry).suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    return "PNG" if suffix == ".png" else "JPEG"
    except OSError:
        return None
    return None
