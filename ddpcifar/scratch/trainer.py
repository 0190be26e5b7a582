"""Training loop of the NumPy engine: validation split, SGD steps, evaluation, run directory.

`train_scratch(settings, splits, rundir)` is what `python -m ddpcifar.train` runs for model
'scratch_cnn', through ddpcifar.engine.numpy_runner, which reads the prepared betons into NumPy
arrays and copies the validated run spec into `ScratchSettings`. This module reads no files and
imports nothing but NumPy and the torch-free ddpcifar.schedule, ddpcifar.metrics and
ddpcifar.progress (shared with the torch engine), and ddpcifar.runs, the torch-free run
lifecycle: it holds out a seeded validation part of the train split, trains with the spec's
optimizer, schedule, loss and augmentation, evaluates test (and validation) accuracy, and
reports through a `ddpcifar.runs.report.Reporter` (docs/run_directory.md), stopping cleanly on
SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ddpcifar.data.orders import part_positions
from ddpcifar.errors import UserError
from ddpcifar.metrics import EvalResult, RunningSums
from ddpcifar.progress import NullProgress, TrainingProgress
from ddpcifar.runs import states
from ddpcifar.runs.report import Reporter, RunWriter, one_line
from ddpcifar.runs.stopping import StopNow, StopRequest
from ddpcifar.schedule import lr_factor
from ddpcifar.scratch.augment import Normalizer, augment, mean_fill
from ddpcifar.scratch.blas import set_blas_threads
from ddpcifar.scratch.layers import SoftmaxCrossEntropy, log_softmax
from ddpcifar.scratch.network import Sequential
from ddpcifar.scratch.optim import SGD, clip_grad_norm
from ddpcifar.scratch.settings import ScratchSettings

FINAL_CHECKPOINT = "checkpoints/scratch_final.npz"
BEST_CHECKPOINT = "checkpoints/scratch_best.npz"
STOPPED_CHECKPOINT = "checkpoints/scratch_last.npz"  # the weights when a stop request came


class _StopRequested(Exception):
    """Raised between steps when a stop was asked for."""


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


def split_train_val(images: np.ndarray, labels: np.ndarray, val_size: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y): the validation split of data.val_size and
    data.val_seed, stratified by class, the same positions the torch engine holds out."""
    train = part_positions(labels, part="train", max_samples=None, val_size=val_size,
                           val_seed=seed)
    val = part_positions(labels, part="val", max_samples=None, val_size=val_size, val_seed=seed)
    if train is None:
        train = np.arange(len(labels))
    if val is None:
        val = np.zeros(0, dtype=np.int64)
    return images[train], labels[train], images[val], labels[val]


def make_data(settings: ScratchSettings, splits: Splits) -> ScratchData:
    """Hold out the validation split (data.val_size, data.val_seed) of the train split."""
    tr_x, tr_y, va_x, va_y = split_train_val(splits.train_x, splits.train_y,
                                             settings.val_size, settings.val_seed)
    if len(tr_y) == 0 or len(splits.test_y) == 0:
        raise UserError(f"no training or test images left after holding out "
                        f"data.val_size={settings.val_size} of {len(splits.train_y)} "
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

    SIGTERM or Ctrl-C stops it after the current step: the weights go to scratch_last.npz and
    the run ends as stopped (the NumPy engine does not resume; a clone starts it again). Any
    error marks the run failed (status.json, one line) before it propagates.
    """
    reporter: Reporter | None = None
    try:
        data = make_data(settings, splits)
        reporter = Reporter(rundir, max_samples=settings.max_samples,
                            sample_images=lambda index: data.test_x[
                                np.searchsorted(data.test_index, index)])
        with StopRequest() as stop:
            return _fit(settings, data, reporter, stop, progress)
    except StopNow as err:
        (reporter or Reporter(rundir, max_samples=0, sample_images=_none)).end(
            states.STOPPED, f"interrupted by a {err}; nothing saved")
        raise
    except BaseException as err:
        (reporter or Reporter(rundir, max_samples=0, sample_images=_none)).fail(one_line(err))
        raise


def _none(index: np.ndarray) -> np.ndarray:
    return np.zeros((0, 32, 32, 3), np.uint8)


def _fit(settings: ScratchSettings, data: ScratchData, reporter: Reporter, stop: StopRequest,
         progress: bool) -> dict:
    if settings.blas_threads is not None:
        set_blas_threads(settings.blas_threads)
    run = ScratchRun(settings, data, reporter, stop)
    bar = (TrainingProgress(epochs=settings.epochs, steps_per_epoch=run.steps_per_epoch)
           if progress else NullProgress())
    try:
        for epoch in range(1, settings.epochs + 1):
            train_loss, train_top1 = run.train_epoch(epoch, bar)
            if epoch % settings.eval_every == 0 or epoch == settings.epochs:
                run.evaluate_epoch(epoch, train_loss, train_top1, bar)
    except _StopRequested:
        bar.close()
        return run.stopped()
    finally:
        bar.close()
    return run.finish()


class ScratchRun:
    """One training run: the network, optimizer and schedule, and what it has logged so far."""

    def __init__(self, settings: ScratchSettings, data: ScratchData, reporter: Reporter,
                 stop: StopRequest | None = None) -> None:
        self.settings, self.data, self.reporter = settings, data, reporter
        self.rundir = reporter.run
        self.stop = stop or StopRequest()
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
        self.ckpt_dir = Path(self.rundir.path) / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.step = 0
        self.train_time = 0.0
        self.images_per_s = 0.0  # of the latest epoch
        self.epochs_done = 0
        self.final_eval_s = 0.0
        self.cpu_start = time.process_time()

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
            if self.stop.requested:
                self.train_time += time.perf_counter() - t0
                raise _StopRequested
        self.epochs_done = epoch
        elapsed = time.perf_counter() - t0
        self.train_time += elapsed
        self.images_per_s = whole.per_second(elapsed)
        return whole.mean_loss(), whole.top1()

    def evaluate_epoch(self, epoch: int, train_loss: float, train_top1: float,
                       bar: TrainingProgress | NullProgress) -> None:
        """Test (and validation) metrics, reported: eval line, samples, best checkpoint, status."""
        settings, data = self.settings, self.data
        t0 = time.perf_counter()
        test = evaluate(self.net, data.test_x, data.test_y, self.normalize, data.num_classes,
                        settings.eval_batch_size)
        # Misclassified samples by their position in the test split's file, as the torch engine.
        test.misclassified = [(int(data.test_index[p]), t, pred, conf)
                              for p, t, pred, conf in test.misclassified]
        val = (evaluate(self.net, data.val_x, data.val_y, self.normalize, data.num_classes,
                        settings.eval_batch_size) if len(data.val_y) else None)
        self.final_eval_s = time.perf_counter() - t0
        report = self.reporter.evaluation(
            epoch=epoch, step=self.step, result=test, val=val, train_loss=train_loss,
            train_top1=train_top1, checkpoint=BEST_CHECKPOINT if settings.save_best else None,
            images_per_s=self.images_per_s)
        if report.improved and settings.save_best:
            self.save_checkpoint(BEST_CHECKPOINT, epoch)
        val_text = "-" if val is None else f"{val.top1:.4f}"
        bar.message(f"epoch {epoch}: test top1 {test.top1:.4f}  loss {test.loss:.4f}"
                    f"  val top1 {val_text}")

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
        """Save the final weights, write summary.json and end as finished; returns the summary."""
        assert self.reporter.last is not None, "no epoch finished"
        self.save_checkpoint(FINAL_CHECKPOINT, self.settings.epochs)
        summary = self._summary(states.FINISHED, FINAL_CHECKPOINT)
        self.reporter.end(states.FINISHED)
        return summary

    def stopped(self) -> dict:
        """After a stop request: save the current weights, summary, and end as stopped."""
        self.save_checkpoint(STOPPED_CHECKPOINT, self.epochs_done)
        summary = self._summary(states.STOPPED, STOPPED_CHECKPOINT)
        self.reporter.end(states.STOPPED, f"{self.stop.describe()} at step {self.step}; the "
                                          "NumPy engine does not resume (clone the run to "
                                          "train it again)")
        return summary

    def _summary(self, state: str, checkpoint: str) -> dict:
        train_s = self.train_time
        final_eval_s = self.final_eval_s if state == states.FINISHED else 0.0
        return self.reporter.summary(
            state=state, epochs=self.settings.epochs, epochs_done=self.epochs_done,
            steps=self.step, parameters=self.net.num_parameters(), train_time_s=train_s,
            images_per_s=(self.step * self.settings.batch_size / train_s) if train_s else None,
            timing={"train_s": train_s, "final_eval_s": final_eval_s,
                    "time_to_accuracy_s": train_s + final_eval_s},
            checkpoint=checkpoint,
            # CPU seconds of all this process's threads: on a shared machine this says how
            # long the run would take alone (with one BLAS thread), whatever the wall time was.
            extra={"cpu_time_s": round(time.process_time() - self.cpu_start, 3)})
