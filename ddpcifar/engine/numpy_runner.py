"""Run a `scratch_cnn` spec on the NumPy engine: same spec, same run directory as torch runs.

This side reads the data (FFCV, torch) and the validated spec; ddpcifar.scratch gets NumPy
arrays and a plain `ScratchSettings`, so the engine itself needs nothing but NumPy.
"""

from __future__ import annotations

import copy
from typing import Any

from ddpcifar.data.beton import read_split
from ddpcifar.data.meta import DataMeta, load_meta
from ddpcifar.data.orders import subset_positions, validation_record
from ddpcifar.runs.rundir import RunDir
from ddpcifar.scratch.augment import Augment
from ddpcifar.scratch.network import DEFAULT_ARCHITECTURE
from ddpcifar.scratch.settings import ScratchSettings
from ddpcifar.scratch.trainer import Splits, train_scratch
from ddpcifar.spec import RunSpec


def scratch_settings(spec: RunSpec) -> ScratchSettings:
    """Copy the spec's fields into the NumPy trainer's settings; no checks of its own.

    `RunSpec` has already refused, at load time, every value this engine cannot honour
    (RunSpec._numpy_engine_checks).
    """
    a = spec.augment
    basic = a.kind == "basic"
    arch = spec.scratch.architecture
    return ScratchSettings(
        epochs=int(spec.train.epochs),  # a whole number: fractions are refused at load time
        batch_size=spec.train.global_batch_size,
        seed=spec.train.seed,
        log_every=spec.train.log_every,
        label_smoothing=spec.train.label_smoothing,
        grad_clip=spec.train.grad_clip,
        lr=spec.optimizer.lr,
        momentum=spec.optimizer.momentum,
        nesterov=spec.optimizer.nesterov,
        weight_decay=spec.optimizer.weight_decay,
        schedule=spec.schedule,
        augment=Augment(flip_p=a.flip_p if basic else 0.0, translate=a.translate if basic else 0,
                        translate_pad=a.translate_pad, cutout=a.cutout if basic else 0),
        eval_batch_size=spec.eval.batch_size,
        eval_every=spec.eval.every,
        max_samples=spec.eval.max_samples,
        save_best=spec.checkpoint.save_best,
        val_size=spec.data.val_size,
        val_seed=spec.data.val_seed,
        architecture=copy.deepcopy(DEFAULT_ARCHITECTURE if arch is None else arch),
        dtype=spec.scratch.dtype,
        blas_threads=spec.scratch.blas_threads,
    )


def read_splits(spec: RunSpec, meta: DataMeta) -> Splits:
    """Both betons of `spec.data.dir` in memory, `data.max_samples` applied as in the torch
    engine (evenly spaced positions of each split, before the validation split)."""
    arrays: dict[str, Any] = {}
    for split in ("train", "test"):
        images, labels = read_split(spec.data.dir, split)
        positions = subset_positions(len(labels), spec.data.max_samples)
        if positions is not None:
            images, labels = images[positions], labels[positions]
        arrays[split] = (images, labels, positions)
    (train_x, train_y, _), (test_x, test_y, test_pos) = arrays["train"], arrays["test"]
    return Splits(train_x, train_y, test_x, test_y, mean=tuple(meta.mean), std=tuple(meta.std),
                  num_classes=len(meta.classes), test_index=test_pos)


class _WithTensorBoard:
    """The run directory, plus TensorBoard scalars of every metrics line (logging.tensorboard)."""

    def __init__(self, run: RunDir, tb: Any) -> None:
        self.run, self.tb, self.path = run, tb, run.path
        self._step = 0

    @property
    def is_writer(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return self.run.status()

    def elapsed(self) -> float:
        return self.run.elapsed()

    def log(self, kind: str, *, epoch: float, step: int, values: dict[str, Any]) -> None:
        self.run.log(kind, epoch=epoch, step=step, values=values)
        self.tb.scalars(kind, {k: v for k, v in values.items() if k != "count"}, step)
        self._step = step

    def write_status(self, **changes: Any) -> None:
        self.run.write_status(**changes)

    def write_samples(self, epoch: int, **arrays: Any) -> Any:
        self.tb.misclassified(arrays["images"][:50], self._step)
        return self.run.write_samples(epoch, **arrays)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.run.write_summary(summary)

    def finish(self, state: str = "finished", error: str | None = None) -> None:
        try:
            self.run.finish(state, error)
        finally:
            self.tb.close()


def run_scratch_spec(spec: RunSpec) -> dict:
    """Train `spec` with the NumPy engine in this process; returns the summary.

    The data is read before the run directory is created, so a missing or broken data
    directory leaves nothing behind (as with the torch engine).
    """
    meta = load_meta(spec.data.dir, verify_sha256=True)
    splits = read_splits(spec, meta)
    settings = scratch_settings(spec)
    run = RunDir(spec.run_dir, name=spec.logging.run_name, model=spec.model.name, engine="numpy",
                 epochs=settings.epochs, world_size=1, classes=meta.classes)
    run.write_spec(spec.resolved())
    if spec.data.val_size:
        run.write_validation(validation_record(read_split(spec.data.dir, "train")[1], spec.data))
    writer: Any = run
    if spec.logging.tensorboard:
        from ddpcifar.engine.tensorboard import TensorBoardSink

        writer = _WithTensorBoard(run, TensorBoardSink(spec.run_dir / "tb"))
    return train_scratch(settings, splits, writer, progress=spec.logging.progress)
