"""Training loop of the NumPy engine: validation split, SGD steps, evaluation, run directory.

`train_scratch(settings, splits, rundir)` is what `python -m ddpcifar.train` runs for model
'scratch_cnn', through ddpcifar.engine.numpy_runner, which reads the prepared betons into NumPy
arrays and copies the validated run spec into `ScratchSettings`. This module reads no files and
imports nothing but NumPy and the torch-free ddpcifar.schedule, ddpcifar.metrics and
ddpcifar.progress (shared with the torch engine): it holds out a seeded validation part of the
train split, trains with the spec's optimizer, schedule, loss and augmentation, evaluates test
(and validation) accuracy, and writes through `rundir` (docs/run_directory.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from ddpcifar.errors import UserError
from ddpcifar.metrics import EvalResult, RunningSums
from ddpcifar.progress import NullProgress, TrainingProgress
from ddpcifar.schedule import lr_factor
from ddpcifar.scratch.augment import Normalizer, augment, mean_fill
from ddpcifar.scratch.blas import set_blas_threads
from ddpcifar.scratch.layers import SoftmaxCrossEntropy, log_softmax
from ddpcifar.scratch.network import Sequential
from ddpcifar.scratch.optim import SGD, clip_grad_norm
from ddpcifar.scratch.settings import ScratchSettings

FINAL_CHECKPOINT = "checkpoints/scratch_final.npz"
BEST_CHECKPOINT = "checkpoints/scratch_best.npz"


class RunWriter(Protocol):
    """The part of ddpcifar.engine.rundir.RunDir / NullRunDir this trainer uses."""

    path: Path

    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None: ...
    def write_status(self, **changes: Any) -> None: ...
    def write_samples(self, epoch: int, **arrays: Any) -> Any: ...
    def write_summary(self, summary: dict[str, Any]) -> None: ...
    def finish(self, state: str = "finished", error: str | None = None) -> None: ...


@dataclass(frozen=True)
class Splits:
    """Both splits as the caller read them: uint8 (N, H, W, C) images and int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, ...]  # per channel, 0..255 units
    std: tuple[float, ...]
    num_classes: int
    test_index: np.ndarray | None = None  # each test image's position in its file; None: 0..N-1


@dataclass(frozen=True)
class ScratchData:
    """The arrays one run trains and evaluates on, after the validation split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test_index: np.ndarray  # position of each test image in the test split (for samples)
    num_classes: int


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split of the train set into (train_x, train_y, val_x, val_y)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val = int(round(len(labels) * val_fraction))
    val, train = np.sort(order[:n_val]), order[n_val:]
    return images[train], labels[train], images[val], labels[val]


def make_data(settings: ScratchSettings, splits: Splits) -> ScratchData:
    """Hold out the seeded validation part (scratch.val_fraction) of the train split."""
    tr_x, tr_y, va_x, va_y = split_train_val(splits.train_x, splits.train_y,
                                             settings.val_fraction, settings.seed)
    if len(tr_y) == 0 or len(splits.test_y) == 0:
        raise UserError(f"no training or test images left after holding out "
                        f"scratch.val_fraction={settings.val_fraction} of {len(splits.train_y)} "
                        f"training images ({len(splits.test_y)} test images)")
    test_index = (np.arange(len(splits.test_y)) if splits.test_index is None
                  else np.asarray(splits.test_index, dtype=np.int64))
    return ScratchData(tr_x, tr_y, va_x, va_y, splits.test_x, splits.test_y,
                       tuple(splits.mean), tuple(splits.std), test_index, splits.num_classes)


def batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """`order` cut into consecutive index arrays of `batch_size` (the last may be shorter)."""
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def train_order(n: int, seed: int, epoch: int, batch_size: int) -> np.ndarray:
    """The samples of one epoch (0-based), in order: full batches only, like the torch engine.

    The same draw as ddpcifar.data.loaders.train_order for one process (a permutation seeded
    by (seed, epoch), the remainder dropped), so train.seed orders the data the same way.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[:(n // batch_size) * batch_size]


def evaluate(net: Sequential, images: np.ndarray, labels: np.ndarray, normalize: Normalizer,
             num_classes: int, batch_size: int) -> EvalResult:
    """Loss, top-k accuracy, per-class accuracy, confusion matrix and misclassified samples
    (indexed by position in `images`) over a whole set."""
    total_loss = 0.0
    hits = {1: 0, 3: 0, 5: 0}
    preds, confs = [], []
    for idx in batches(np.arange(len(labels)), batch_size):
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
    confidence = np.concatenate(confs)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    n = len(labels)
    wrong = np.flatnonzero(pred != labels)
    return EvalResult(
        loss=total_loss / n, top1=hits[1] / n, top3=hits[3] / n, top5=hits[5] / n,
        per_class=[float(v) for v in per_class], confusion=confusion.tolist(), count=n,
        misclassified=list(zip(wrong.tolist(), labels[wrong].tolist(), pred[wrong].tolist(),
                               confidence[wrong].tolist())))


def train_scratch(settings: ScratchSettings, splits: Splits, rundir: RunWriter, *,
                  progress: bool = True) -> dict:
    """Train the scratch CNN on in-memory `splits`, write the run directory, return the summary.

    Any error marks the run failed (status.json, one line) before it propagates.
    """
    try:
        data = make_data(settings, splits)
        summary = _fit(settings, data, rundir, progress)
    except BaseException as err:
        _mark_failed(rundir, err)
        raise
    rundir.finish("finished")
    return summary


def _mark_failed(rundir: RunWriter, err: BaseException) -> None:
    """status.json says failed, with a one-line reason, before the error propagates."""
    message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    rundir.finish("failed", error=(message.splitlines() or [type(err).__name__])[0])


def _fit(settings: ScratchSettings, data: ScratchData, rundir: RunWriter, progress: bool) -> dict:
    if settings.blas_threads is not None:
        set_blas_threads(settings.blas_threads)
    run = ScratchRun(settings, data, rundir)
    bar = (TrainingProgress(epochs=settings.epochs, steps_per_epoch=run.steps_per_epoch)
           if progress else NullProgress())
    try:
        for epoch in range(1, settings.epochs + 1):
            train_loss, train_top1 = run.train_epoch(epoch, bar)
            if epoch % settings.eval_every == 0 or epoch == settings.epochs:
                run.evaluate_epoch(epoch, train_loss, train_top1, bar)
    finally:
        bar.close()
    return run.finish()


class ScratchRun:
    """One training run: the network, optimizer and schedule, and what it has logged so far."""

    def __init__(self, settings: ScratchSettings, data: ScratchData, rundir: RunWriter) -> None:
        self.settings, self.data, self.rundir = settings, data, rundir
        self.dtype = np.dtype(settings.dtype)
        self.net = Sequential(settings.architecture, input_shape=data.train_x.shape[1:],
                              seed=settings.seed, dtype=self.dtype)
        if self.net.num_outputs != data.num_classes:
            raise UserError(f"scratch.architecture: last layer has {self.net.num_outputs} "
                            f"outputs, the data {data.num_classes} classes")
        self.criterion = SoftmaxCrossEntropy(settings.label_smoothing)
        self.opt = SGD(self.net.params(), lr=settings.lr, momentum=settings.momentum,
                       nesterov=settings.nesterov, weight_decay=settings.weight_decay)
        # Full batches only (the torch engine drops the last partial batch too).
        self.steps_per_epoch = len(data.train_y) // settings.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"train split too small for one batch: {len(data.train_y)} images "
                            f"after the validation split, train.global_batch_size="
                            f"{settings.batch_size}")
        self.total_steps = settings.epochs * self.steps_per_epoch
        self.normalize = Normalizer(data.mean, data.std, self.dtype)
        self.fill = mean_fill(data.mean)  # cutout colour
        self.aug_rng = np.random.default_rng(settings.seed + 1)  # augmentation draws
        self.ckpt_dir = Path(rundir.path) / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.step = 0
        self.train_time = 0.0
        self.images_per_s = 0.0  # of the latest epoch
        self.best: dict[str, Any] | None = None  # the evaluation with the lowest test loss
        self.best_top1 = 0.0
        self.last: EvalResult | None = None
        self.val_top1: float | None = None
        self.t_start, self.cpu_start = time.perf_counter(), time.process_time()

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based): the shared schedule's."""
        return self.settings.lr * lr_factor(step, self.total_steps, self.steps_per_epoch,
                                            self.settings.schedule)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """One SGD step on a uint8 batch; returns (mean loss, number correct) before the step."""
        logits = self.net.forward(self.normalize(x), train=True)
        loss = self.criterion.forward(logits, y)
        if not math.isfinite(loss):
            raise UserError(f"training diverged (loss {loss}) at step {self.step}; "
                            f"lower optimizer.lr={self.settings.lr}")
        self.net.backward(self.criterion.backward())
        grads = self.net.grads()
        if self.settings.grad_clip is not None:
            clip_grad_norm(grads, self.settings.grad_clip)
        self.opt.lr = self.lr_at(self.step)
        self.opt.step(grads)
        self.step += 1
        return loss, float((logits.argmax(axis=1) == y).sum())

    def train_epoch(self, epoch: int, bar: TrainingProgress | NullProgress) -> tuple[float, float]:
        """One pass over the shuffled training part; logs `train` lines; (loss, top1)."""
        settings, data = self.settings, self.data
        bar.start_epoch(epoch, self.steps_per_epoch)
        whole, window = RunningSums(0.0, 0.0, 0.0), RunningSums(0.0, 0.0, 0.0)
        t0 = t_window = time.perf_counter()
        order = train_order(len(data.train_y), settings.seed, epoch - 1, settings.batch_size)
        for i, idx in enumerate(batches(order, settings.batch_size)):
            x = data.train_x[idx]
            if settings.augment.active:
                x = augment(x, settings.augment, self.aug_rng, self.fill)
            loss, correct = self.train_step(x, data.train_y[idx])
            for sums in (whole, window):
                sums.add(loss, correct, len(idx))
            if self.step % settings.log_every == 0 or i + 1 == self.steps_per_epoch:
                now = time.perf_counter()
                values = {"loss": window.mean_loss(), "top1": window.top1(), "lr": self.opt.lr,
                          "images_per_s": window.per_second(now - t_window)}
                self.rundir.log("train", epoch=round(epoch - 1 + (i + 1) / self.steps_per_epoch,
                                                     4), step=self.step, values=values)
                bar.advance(0, loss=values["loss"], acc=values["top1"], ips=values["images_per_s"])
                window, t_window = RunningSums(0.0, 0.0, 0.0), now
            bar.advance(1)
        elapsed = time.perf_counter() - t0
        self.train_time += elapsed
        self.images_per_s = whole.per_second(elapsed)
        return whole.mean_loss(), whole.top1()

    def evaluate_epoch(self, epoch: int, train_loss: float, train_top1: float,
                       bar: TrainingProgress | NullProgress) -> None:
        """Validation and test accuracy; `eval` line, samples, best checkpoint, status."""
        settings, data = self.settings, self.data
        last = evaluate(self.net, data.test_x, data.test_y, self.normalize, data.num_classes,
                        settings.eval_batch_size)
        self.val_top1 = (evaluate(self.net, data.val_x, data.val_y, self.normalize,
                                  data.num_classes, settings.eval_batch_size).top1
                         if len(data.val_y) else None)
        values = last.metrics()
        values.update(train_loss=train_loss, train_top1=train_top1, val_top1=self.val_top1)
        self.rundir.log("eval", epoch=epoch, step=self.step, values=values)
        _write_misclassified(self.rundir, epoch, data, last, settings.max_samples)
        if self.best is None or last.loss < self.best["loss"]:
            if settings.save_best:
                self.save_checkpoint(BEST_CHECKPOINT, epoch)
            # The keys of the torch engine's `best`: what `ddpcifar.evaluate --json` reproduces.
            self.best = {"epoch": epoch, **last.metrics(),
                         "checkpoint": BEST_CHECKPOINT if settings.save_best else None}
        self.best_top1 = max(self.best_top1, last.top1)
        self.last = last
        self.rundir.write_status(epoch=epoch, best_top1=self.best_top1, last_top1=last.top1,
                                 images_per_s=self.images_per_s)
        val = "-" if self.val_top1 is None else f"{self.val_top1:.4f}"
        bar.message(f"epoch {epoch}: test top1 {last.top1:.4f}  loss {last.loss:.4f}"
                    f"  val top1 {val}")

    def save_checkpoint(self, relpath: str, epoch: int) -> None:
        """Save the network to `relpath` in the run directory, with what evaluating it needs
        beside the weights (whose dtype is the compute dtype) and the architecture: the input
        normalisation (0..255 units), the epoch and eval.batch_size, so `python -m
        ddpcifar.evaluate` computes the test metrics exactly as `evaluate_epoch` did."""
        meta = {"epoch": epoch, "mean": [float(v) for v in self.data.mean],
                "std": [float(v) for v in self.data.std],
                "eval_batch_size": self.settings.eval_batch_size}
        self.net.save(self.ckpt_dir / Path(relpath).name, meta=meta)

    def finish(self) -> dict:
        """Save the final weights and write summary.json; returns the summary."""
        assert self.last is not None and self.best is not None, "no epoch finished"
        self.save_checkpoint(FINAL_CHECKPOINT, self.settings.epochs)
        summary = {
            "wall_time_s": round(time.perf_counter() - self.t_start, 3),
            # CPU seconds of all this process's threads: on a shared machine this says how long
            # the run would take alone (with one BLAS thread), whatever the wall time was.
            "cpu_time_s": round(time.process_time() - self.cpu_start, 3),
            "train_time_s": round(self.train_time, 3),  # training steps only, as in the torch engine
            "images_per_s": round(self.total_steps * self.settings.batch_size / self.train_time, 1),
            "parameters": self.net.num_parameters(),
            "best": self.best,
            "final": {"epoch": self.settings.epochs, **self.last.metrics()},
            "val_top1": self.val_top1,
            "checkpoint": FINAL_CHECKPOINT,
        }
        self.rundir.write_summary(summary)
        return summary


def _write_misclassified(rundir: RunWriter, epoch: int, data: ScratchData, ev: EvalResult,
                         max_samples: int) -> None:
    """Save up to `max_samples` misclassified test images, spread over the true classes."""
    from ddpcifar.engine.rundir import spread_by_class  # torch-free, like this package

    rows = [ev.misclassified[i]
            for i in spread_by_class([r[1] for r in ev.misclassified], max_samples)]
    position = np.array([r[0] for r in rows], dtype=np.int64)
    rundir.write_samples(epoch, images=np.ascontiguousarray(data.test_x[position]),
                         true=data.test_y[position],
                         pred=np.array([r[2] for r in rows], dtype=np.int64),
                         confidence=np.array([r[3] for r in rows], dtype=np.float32),
                         index=data.test_index[position])
