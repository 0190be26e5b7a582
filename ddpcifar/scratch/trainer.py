"""Training loop of the NumPy engine: config, data split, SGD steps, evaluation, run directory.

`train_scratch(cfg, rundir)` is what `python -m ddpcifar.train` calls for `engine: numpy`.
It reads the prepared betons into memory once, holds out a seeded validation part of the
train split, trains with SGD+momentum on a warm-up + cosine schedule, evaluates validation and
test accuracy after every epoch, and writes everything through `rundir` (docs/run_directory.md).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from ddpcifar.errors import UserError
from ddpcifar.scratch.blas import set_blas_threads
from ddpcifar.scratch.augment import Normalizer, flip_translate
from ddpcifar.scratch.layers import SoftmaxCrossEntropy, log_softmax
from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE, Sequential
from ddpcifar.scratch.optim import SGD
from ddpcifar.scratch.schedule import Constant, StepDecay, WarmupCosine

SCHEDULES = ("cosine", "step", "constant")
FINAL_CHECKPOINT = "checkpoints/scratch_final.npz"
BEST_CHECKPOINT = "checkpoints/scratch_best.npz"


@dataclass
class ScratchConfig:
    """Everything a scratch run depends on; plain data, checked on construction."""

    data_dir: str = "data/cifar10"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2 on weights (not biases)
    val_fraction: float = 0.1  # part of the train split held out for validation
    seed: int = 0  # initialisation, split, shuffling and augmentation
    schedule: str = "cosine"  # "cosine" (linear warm-up, cosine to 0), "step", "constant"
    warmup_epochs: float = 1.0  # cosine only
    step_epochs: float = 5.0  # step only: multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    architecture: list[dict[str, Any]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_ARCHITECTURE))
    augment: bool = True  # random horizontal flip + translate by up to `max_shift` pixels
    max_shift: int = 2
    max_train_samples: int | None = None  # cap on training images (after the val split)
    max_test_samples: int | None = None  # cap on test images (seeded subset, in file order)
    eval_batch_size: int = 500
    log_every: int = 50  # optimizer steps between `train` lines in metrics.jsonl
    max_samples: int = 64  # misclassified test images saved per evaluation
    dtype: str = "float32"  # "float64" is exact but about 2x slower
    blas_threads: int | None = None  # OpenBLAS threads for the run; None leaves NumPy's default

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size, "log_every": self.log_every}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"scratch config {name}: must be an integer >= 1: {value!r}")
        for name in ("max_train_samples", "max_test_samples", "blas_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"scratch config {name}: must be null or an integer >= 1: {value!r}")
        if not self.lr > 0:
            raise UserError(f"scratch config lr: must be > 0: {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"scratch config momentum: must be in [0, 1): {self.momentum!r}")
        if self.weight_decay < 0:
            raise UserError(f"scratch config weight_decay: must be >= 0: {self.weight_decay!r}")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"scratch config val_fraction: must be in [0, 1): {self.val_fraction!r}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"scratch config schedule: expected one of {', '.join(SCHEDULES)}: "
                            f"{self.schedule!r}")
        if self.warmup_epochs < 0 or self.step_epochs <= 0:
            raise UserError(f"scratch config warmup_epochs/step_epochs: must be >= 0 / > 0: "
                            f"{self.warmup_epochs!r}, {self.step_epochs!r}")
        if self.max_samples < 0 or self.max_shift < 0:
            raise UserError(f"scratch config max_samples/max_shift: must be >= 0: "
                            f"{self.max_samples!r}, {self.max_shift!r}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"scratch config dtype: expected float32 or float64: {self.dtype!r}")
        Sequential(self.architecture)  # raises UserError naming the bad layer field


class RunWriter(Protocol):
    """The part of ddpcifar.engine.rundir.RunDir / NullRunDir this trainer uses."""

    path: Path

    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None: ...
    def write_status(self, **changes: Any) -> None: ...
    def write_samples(self, epoch: int, **arrays: Any) -> Any: ...
    def write_summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self, state: str = "finished", error: str | None = None) -> None: ...


@dataclass(frozen=True)
class ScratchData:
    """The arrays one run trains and evaluates on (uint8 HWC images, int64 labels)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    test_index: np.ndarray  # position of each test image in the test split (for samples)
    num_classes: int = 10


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split of the train set into (train_x, train_y, val_x, val_y).

    The training part comes back in random order, so a cap on its size (`max_train_samples`)
    takes a random subset even when the file is sorted by class.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = int(round(len(labels) * val_fraction))
    val, train = np.sort(order[:n_val]), order[n_val:]
    return images[train], labels[train], images[val], labels[val]


def load_data(cfg: ScratchConfig) -> ScratchData:
    """Read both betons of `cfg.data_dir` and apply the validation split and sample caps."""
    # Imported here: reading betons pulls in FFCV, which the engine itself does not need.
    from ddpcifar.data.beton import read_split
    from ddpcifar.data.meta import load_meta

    meta = load_meta(cfg.data_dir)
    train_x, train_y = read_split(cfg.data_dir, "train")
    test_x, test_y = read_split(cfg.data_dir, "test")
    return make_data(cfg, train_x, train_y, test_x, test_y, meta.mean, meta.std,
                     num_classes=len(meta.classes))


def make_data(
    cfg: ScratchConfig,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    num_classes: int = 10,
) -> ScratchData:
    """Apply the seeded validation split and the sample caps of `cfg` to in-memory arrays."""
    tr_x, tr_y, va_x, va_y = split_train_val(train_x, train_y, cfg.val_fraction, cfg.seed)
    if cfg.max_train_samples is not None:
        tr_x, tr_y = tr_x[:cfg.max_train_samples], tr_y[:cfg.max_train_samples]
    test_index = np.arange(len(test_y))
    if cfg.max_test_samples is not None and cfg.max_test_samples < len(test_y):
        # a seeded random subset kept in file order: the first N could be all one class
        test_index = np.sort(np.random.default_rng(cfg.seed).choice(
            len(test_y), cfg.max_test_samples, replace=False))
        test_x, test_y = test_x[test_index], test_y[test_index]
    if len(tr_y) == 0 or len(test_y) == 0:
        raise UserError(f"no training or test images left after the split: {cfg.data_dir}")
    return ScratchData(tr_x, tr_y, va_x, va_y, test_x, test_y, tuple(mean), tuple(std),
                       test_index, num_classes)


def make_schedule(cfg: ScratchConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate schedule of `cfg`, as a function of the optimizer step."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total)
        return WarmupCosine(cfg.lr, total, warmup)
    if cfg.schedule == "step":
        return StepDecay(cfg.lr, max(1, int(round(cfg.step_epochs * steps_per_epoch))),
                         cfg.step_gamma)
    return Constant(cfg.lr)


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays covering range(n) in batches; shuffled when `rng` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


@dataclass
class Evaluation:
    """Metrics of one pass over a labelled set, plus what the misclassified samples need."""

    loss: float
    top1: float
    top3: float
    top5: float
    per_class: list[float]
    confusion: list[list[int]]
    count: int
    pred: np.ndarray
    confidence: np.ndarray

    def metrics(self) -> dict[str, Any]:
        """The keys of an `eval` line / summary `final` (docs/run_directory.md)."""
        return {"loss": self.loss, "top1": self.top1, "top3": self.top3, "top5": self.top5,
                "per_class": self.per_class, "confusion": self.confusion, "count": self.count}


def evaluate(net: Sequential, images: np.ndarray, labels: np.ndarray, normalize: Normalizer,
             num_classes: int, batch_size: int) -> Evaluation:
    """Loss, top-k accuracy, per-class accuracy and confusion matrix over a whole set."""
    total_loss = 0.0
    hits = {1: 0, 3: 0, 5: 0}
    preds, confs = [], []
    for idx in batches(len(labels), batch_size, None):
        logp = log_softmax(net.forward(normalize(images[idx]), train=False).astype(np.float64))
        y = labels[idx]
        total_loss += float(-logp[np.arange(len(y)), y].sum())
        # rank of the true class = how many classes scored strictly higher
        rank = (logp > logp[np.arange(len(y)), y][:, None]).sum(axis=1)
        for k in hits:
            hits[k] += int((rank < k).sum())
        preds.append(logp.argmax(axis=1))
        confs.append(np.exp(logp.max(axis=1)))
    pred = np.concatenate(preds)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    n = len(labels)
    return Evaluation(
        loss=total_loss / n, top1=hits[1] / n, top3=hits[3] / n, top5=hits[5] / n,
        per_class=[float(v) for v in per_class], confusion=confusion.tolist(), count=n,
        pred=pred, confidence=np.concatenate(confs).astype(np.float32))


def _progress(enabled: bool):  # -> rich.progress.Progress | None
    if not enabled:
        return None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.3f}  "
                   "{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False)


def train_scratch(cfg: ScratchConfig, rundir: RunWriter, *, progress: bool = True) -> dict:
    """Train the scratch CNN on `cfg.data_dir`, write the run directory, return the summary."""
    try:
        data = load_data(cfg)
    except BaseException as err:
        _mark_failed(rundir, err)
        raise
    return fit(cfg, data, rundir, progress=progress)


def fit(cfg: ScratchConfig, data: ScratchData, rundir: RunWriter, *,
        progress: bool = True) -> dict:
    """Train on in-memory `data`; the part of `train_scratch` that does not read files."""
    try:
        summary = _fit(cfg, data, rundir, progress)
    except BaseException as err:
        _mark_failed(rundir, err)
        raise
    rundir.finish("finished")
    return summary


def _mark_failed(rundir: RunWriter, err: BaseException) -> None:
    """status.json says failed, with a one-line reason, before the error propagates."""
    message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    rundir.finish("failed", error=(message.splitlines() or [type(err).__name__])[0])


def _fit(cfg: ScratchConfig, data: ScratchData, rundir: RunWriter, progress: bool) -> dict:
    if cfg.blas_threads is not None:
        set_blas_threads(cfg.blas_threads)
    run = _Run(cfg, data, rundir)
    bar = _progress(progress)
    if bar is not None:
        bar.start()
    try:
        for epoch in range(1, cfg.epochs + 1):
            train_loss, train_top1 = run.train_epoch(epoch, bar)
            run.evaluate_epoch(epoch, train_loss, train_top1, bar)
    finally:
        if bar is not None:
            bar.stop()
    return run.finish()


class _Running:
    """Sums of loss, correct predictions and images over a window of steps."""

    def __init__(self) -> None:
        self.loss = self.correct = self.seen = 0.0
        self.t0 = time.perf_counter()

    def add(self, loss: float, correct: float, n: int) -> None:
        self.loss += loss * n
        self.correct += correct
        self.seen += n

    def mean_loss(self) -> float:
        return self.loss / max(self.seen, 1)

    def top1(self) -> float:
        return self.correct / max(self.seen, 1)

    def images_per_s(self) -> float:
        return self.seen / max(time.perf_counter() - self.t0, 1e-9)


class _Run:
    """One training run: the network, optimizer and schedule, and what it has logged so far."""

    def __init__(self, cfg: ScratchConfig, data: ScratchData, rundir: RunWriter) -> None:
        self.cfg, self.data, self.rundir = cfg, data, rundir
        self.dtype = np.dtype(cfg.dtype)
        self.net = Sequential(cfg.architecture, input_shape=data.train_x.shape[1:],
                              seed=cfg.seed, dtype=self.dtype)
        if self.net.num_outputs != data.num_classes:
            raise UserError(f"architecture: last layer has {self.net.num_outputs} outputs, "
                            f"the data {data.num_classes} classes")
        self.criterion = SoftmaxCrossEntropy()
        self.opt = SGD(self.net.params(), lr=cfg.lr, momentum=cfg.momentum,
                       weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(len(data.train_y) / cfg.batch_size)
        self.lr_at = make_schedule(cfg, self.steps_per_epoch)
        self.normalize = Normalizer(data.mean, data.std, self.dtype)
        self.rng = np.random.default_rng(cfg.seed + 1)  # shuffling and augmentation
        self.ckpt_dir = Path(rundir.path) / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.step = 0
        self.train_time = 0.0
        self.images_per_s = 0.0  # of the latest epoch
        self.best: dict[str, Any] | None = None  # the evaluation with the lowest test loss
        self.best_top1 = 0.0
        self.last: Evaluation | None = None
        self.val_top1: float | None = None
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """One SGD step on a uint8 batch; returns (mean loss, number correct) before the step."""
        logits = self.net.forward(self.normalize(x), train=True)
        loss = self.criterion.forward(logits, y)
        if not math.isfinite(loss):
            raise UserError(f"training diverged (loss {loss}) at step {self.step}; "
                            f"lower lr: {self.cfg.lr}")
        self.net.backward(self.criterion.backward())
        self.opt.lr = self.lr_at(self.step)
        self.opt.step(self.net.grads())
        self.step += 1
        return loss, float((logits.argmax(axis=1) == y).sum())

    def train_epoch(self, epoch: int, bar: Any) -> tuple[float, float]:
        """One pass over the shuffled training part; logs `train` lines; (loss, top1)."""
        cfg, data = self.cfg, self.data
        task = (bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=self.steps_per_epoch,
                             loss=float("nan"), acc=0.0, ips=0.0) if bar is not None else None)
        whole, window = _Running(), _Running()
        for i, idx in enumerate(batches(len(data.train_y), cfg.batch_size, self.rng)):
            x = data.train_x[idx]
            if cfg.augment:
                x = flip_translate(x, self.rng, cfg.max_shift)
            loss, correct = self.train_step(x, data.train_y[idx])
            whole.add(loss, correct, len(idx))
            window.add(loss, correct, len(idx))
            if self.step % cfg.log_every == 0 or i + 1 == self.steps_per_epoch:
                values = {"loss": window.mean_loss(), "top1": window.top1(), "lr": self.opt.lr,
                          "images_per_s": window.images_per_s()}
                self.rundir.log("train", epoch=round(epoch - 1 + (i + 1) / self.steps_per_epoch,
                                                     4), step=self.step, values=values)
                if task is not None:
                    bar.update(task, loss=values["loss"], acc=values["top1"],
                               ips=values["images_per_s"])
                window = _Running()
            if task is not None:
                bar.advance(task)
        self.train_time += time.perf_counter() - whole.t0
        self.images_per_s = whole.images_per_s()
        return whole.mean_loss(), whole.top1()

    def evaluate_epoch(self, epoch: int, train_loss: float, train_top1: float, bar: Any) -> None:
        """Validation and test accuracy; `eval` line, samples, best checkpoint, status."""
        cfg, data = self.cfg, self.data
        last = evaluate(self.net, data.test_x, data.test_y, self.normalize, data.num_classes,
                        cfg.eval_batch_size)
        self.val_top1 = (evaluate(self.net, data.val_x, data.val_y, self.normalize,
                                  data.num_classes, cfg.eval_batch_size).top1
                         if len(data.val_y) else None)
        values = last.metrics()
        values.update(train_loss=train_loss, train_top1=train_top1, val_top1=self.val_top1)
        self.rundir.log("eval", epoch=epoch, step=self.step, values=values)
        _write_misclassified(self.rundir, epoch, data, last, cfg.max_samples)
        if self.best is None or last.loss < self.best["loss"]:
            self.net.save(self.ckpt_dir / Path(BEST_CHECKPOINT).name)
            self.best = {"epoch": epoch, "loss": last.loss, "top1": last.top1,
                         "checkpoint": BEST_CHECKPOINT}
        self.best_top1 = max(self.best_top1, last.top1)
        self.last = last
        self.rundir.write_status(epoch=epoch, best_top1=self.best_top1, last_top1=last.top1,
                                 images_per_s=self.images_per_s)
        if bar is not None:
            val = "-" if self.val_top1 is None else f"{self.val_top1:.4f}"
            bar.console.print(f"epoch {epoch}: test top1 {last.top1:.4f}  loss {last.loss:.4f}"
                              f"  val top1 {val}")

    def finish(self) -> dict:
        """Save the final weights and write summary.json; returns the summary."""
        assert self.last is not None and self.best is not None, "no epoch finished"
        self.net.save(self.ckpt_dir / Path(FINAL_CHECKPOINT).name)
        summary = {
            "wall_time_s": round(time.perf_counter() - self.t_start, 3),
            # CPU seconds of all this process's threads: on a shared machine this says how long
            # the run would take alone (with one BLAS thread), whatever the wall time was.
            "cpu_time_s": round(time.process_time() - self.cpu_start, 3),
            "images_per_s": round(len(self.data.train_y) * self.cfg.epochs / self.train_time, 1),
            "parameters": self.net.num_parameters(),
            "best": self.best,
            "final": {"epoch": self.cfg.epochs, **self.last.metrics()},
            "val_top1": self.val_top1,
            "checkpoint": FINAL_CHECKPOINT,
        }
        self.rundir.write_summary(summary)
        return summary


def _write_misclassified(rundir: RunWriter, epoch: int, data: ScratchData, ev: Evaluation,
                         max_samples: int) -> None:
    """Save up to `max_samples` misclassified test images, spread over the true classes."""
    from ddpcifar.engine.rundir import spread_by_class  # torch-free, like this package

    wrong = np.flatnonzero(ev.pred != data.test_y)
    wrong = wrong[spread_by_class(data.test_y[wrong], max_samples)]
    rundir.write_samples(epoch, images=np.ascontiguousarray(data.test_x[wrong]),
                         true=data.test_y[wrong], pred=ev.pred[wrong],
                         confidence=ev.confidence[wrong], index=data.test_index[wrong])
