"""Run a `scratch_cnn` spec on the NumPy engine: same spec, same run directory as torch runs."""

from __future__ import annotations

from ddpcifar.data.meta import load_meta
from ddpcifar.engine.rundir import RunDir
from ddpcifar.spec import RunSpec


def scratch_config(spec: RunSpec):
    """Translate the spec's sections into the NumPy trainer's plain config."""
    from ddpcifar.scratch.trainer import ScratchConfig

    extra = {} if spec.scratch.architecture is None else {"architecture": spec.scratch.architecture}
    return ScratchConfig(
        data_dir=str(spec.data.dir),
        epochs=spec.train.epochs,
        batch_size=spec.train.global_batch_size,
        lr=spec.optimizer.lr,
        momentum=spec.optimizer.momentum,
        weight_decay=spec.optimizer.weight_decay,
        val_fraction=spec.scratch.val_fraction,
        seed=spec.train.seed,
        schedule=spec.schedule.name,
        warmup_epochs=spec.schedule.warmup_epochs,
        step_epochs=float(spec.schedule.step_epochs),
        step_gamma=spec.schedule.gamma,
        augment=spec.augment.kind == "basic",
        max_shift=spec.augment.translate,
        max_train_samples=spec.data.max_samples,
        max_test_samples=spec.data.max_samples,
        eval_batch_size=spec.eval.batch_size,
        log_every=spec.train.log_every,
        max_samples=spec.eval.max_samples,
        dtype=spec.scratch.dtype,
        blas_threads=spec.scratch.blas_threads,
        **extra,
    )


def run_scratch_spec(spec: RunSpec) -> dict:
    """Train `spec` with the NumPy engine in this process; returns the summary."""
    from ddpcifar.scratch.trainer import train_scratch

    cfg = scratch_config(spec)
    meta = load_meta(spec.data.dir, verify_sha256=True)
    run = RunDir(spec.run_dir, name=spec.logging.run_name, model=spec.model.name, engine="numpy",
                 epochs=spec.train.epochs, world_size=1, classes=meta.classes)
    run.write_spec(spec.resolved())
    return train_scratch(cfg, run, progress=spec.logging.progress)
