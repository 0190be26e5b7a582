"""What a training checkpoint holds: gathered from the training parts, checked, restored.

File I/O (atomic writes, SHA-256 sidecars, safe loading) is ddpcifar.engine.checkpoint; this
module fills and reads the dict. Its keys are fixed, so old checkpoints keep loading: what the
weights are (`model`, `num_classes`, `classes`, `normalization`, `amp`, `channels_last`, `spec`),
`world_size`, the stateful parts (`state_dict`, `optimizer`, `averaging`, `scaler`, every rank's
`rng` and mid-epoch `partial` sums), and the trainer's counters, which the trainer itself writes
and reads back (`epoch`, `step`, `timing`, `best`, `epoch_rates`, `metrics_bytes`, and from
later versions `last` and `last_val`, the latest evaluation as summary.json reports it).

A checkpoint resumes on another number of ranks (docs/resilience.md): the weights, optimizer,
averaging and scaler states are the same on every rank, the sample order depends on the global
batch alone, and the epoch's running sums are added up onto rank 0. Each rank's RNG state has no
counterpart then; rank r takes the state of old rank r modulo the old world size.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ddpcifar.data.meta import DataMeta
from ddpcifar.engine.averaging import WeightAverage
from ddpcifar.engine.checkpoint import load_latest
from ddpcifar.engine.distributed import DistEnv, all_gather_objects, broadcast_object
from ddpcifar.engine.optim import TrainOptimizer
from ddpcifar.engine.wrap import build_on_device
from ddpcifar.errors import UserError
from ddpcifar.metrics import RunningSums
from ddpcifar.spec import BatchNormConfig, RunSpec


def gather_state(spec: RunSpec, env: DistEnv, meta: DataMeta, *, model: nn.Module,
                 optimizer: TrainOptimizer, averaging: WeightAverage | None,
                 scaler: torch.amp.GradScaler,
                 partial: tuple[RunningSums, ...] | None = None,
                 **counters: Any) -> dict[str, Any]:
    """The full training state, with the trainer's `counters`; a collective: every rank takes part.

    Every rank contributes its RNG state and, for a checkpoint taken inside an epoch, its
    running sums (`partial`: window and epoch total).
    """
    rng = all_gather_objects(_rng_state(env.device))
    sums = all_gather_objects([s.tolist() for s in partial]) if partial else None
    return {
        "model": spec.model.name,
        "num_classes": len(meta.classes),
        "classes": list(meta.classes),
        "normalization": {"mean": list(meta.mean), "std": list(meta.std)},
        "amp": spec.train.amp,
        "channels_last": spec.model.channels_last,
        "spec": spec.resolved(),
        "world_size": env.world_size,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "averaging": averaging.state_dict() if averaging is not None else None,
        "scaler": scaler.state_dict(),
        "rng": rng,
        "partial": sums,
        **counters,
    }


def load_resume_state(spec: RunSpec, env: DistEnv, model: nn.Module, *,
                      steps_per_epoch: int) -> tuple[dict[str, Any], str]:
    """Rank 0's latest checkpoint on every rank, checked against this launch; its weights go
    into `model`. Returns the state and the checkpoint's path."""
    state, path, error = None, "", None
    if env.is_main:
        try:
            state, found = load_latest(spec.run_dir / "checkpoints")
            path = str(found)
        except UserError as err:
            error = str(err)
    # Rank 0's failure is every rank's: the others would otherwise wait in this broadcast
    # until the process-group timeout.
    state, path, error = broadcast_object((state, path, error))
    if error:
        raise UserError(error)
    if state["model"] != spec.model.name:
        raise UserError(f"cannot resume: checkpoint is model {state['model']!r}, spec says "
                        f"{spec.model.name!r}")
    written = state["world_size"]
    held = {len(state["rng"]), *([len(state["partial"])] if state.get("partial") else [])}
    if held != {written}:
        raise UserError(f"cannot resume: checkpoint was written with world size {written}, this "
                        f"launch has {env.world_size}, but it holds the state of "
                        f"{' or '.join(map(str, sorted(held)))} ranks (a damaged checkpoint)")
    if not 0 <= state["step"] - state["epoch"] * steps_per_epoch <= steps_per_epoch:
        raise UserError(f"cannot resume: checkpoint is at step {state['step']} after "
                        f"{state['epoch']} epochs, which does not fit {steps_per_epoch} "
                        "steps per epoch (train.global_batch_size or data.max_samples changed?)")
    changed = spec_changes(state.get("spec") or {}, spec.resolved())
    if changed:
        raise UserError(f"cannot resume: the spec differs from the checkpoint's in "
                        f"{', '.join(changed)}; a resume continues the same run (only logging.* "
                        "and model.compile may change): undo the change, or start a new run "
                        "with --set logging.run_name=NAME")
    _load_weights(model, state, f"cannot resume: {path}")
    return state, path


# How a run is written and executed, not what it computes: a resume may change these.
# model.compile: a compiled step computes the eager one (up to float rounding).
RESUME_MAY_CHANGE = ("logging", "model.compile")


def spec_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two resolved specs,
    RESUME_MAY_CHANGE excepted (how a run is written and executed, not what it computes). A field that only one of
    them has is skipped: it was added to the spec after the checkpoint was written."""
    out: list[str] = []
    for key in saved.keys() & current.keys():
        name = f"{prefix}{key}"
        if name in RESUME_MAY_CHANGE:
            continue
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out += spec_changes(a, b, f"{name}.")
        elif a != b:
            out.append(name)
    return sorted(out)


def restore_state(state: dict[str, Any], env: DistEnv, *, optimizer: TrainOptimizer,
                  averaging: WeightAverage | None,
                  scaler: torch.amp.GradScaler) -> list[list[float]] | None:
    """Load the optimizer, averaging, scaler and this rank's RNG state (the weights are in).

    Returns this rank's running sums (window, epoch total) of a checkpoint taken inside an
    epoch, for `RunningSums.of`; None otherwise. Written with another world size, rank 0 gets
    the sums of every old rank and the others zeros: the logged values are sums over ranks.
    """
    optimizer.load_state_dict(state["optimizer"])
    if averaging is not None:
        averaging.load_state_dict(state["averaging"])
    scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    _set_rng_state(rng[env.rank % len(rng)], env.device)
    partial = state.get("partial")
    if not partial:
        return None
    if len(partial) == env.world_size:
        return partial[env.rank]
    if env.rank == 0:
        return [[sum(values) for values in zip(*(sums[i] for sums in partial))]
                for i in range(2)]
    return [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def load_model(state: dict[str, Any], source: str | os.PathLike, device: torch.device) -> nn.Module:
    """A checkpoint's model, ready to evaluate on `device`; `source` names it in errors.

    Built with the run's BatchNorm settings (eps changes what evaluation computes) and memory
    format; a checkpoint older than those keys gets the defaults.
    """
    batchnorm = (state.get("spec") or {}).get("model", {}).get("batchnorm", {})
    model = build_on_device(state["model"], num_classes=state["num_classes"],
                            batchnorm=BatchNormConfig(**batchnorm), device=device,
                            channels_last=state.get("channels_last", True))
    _load_weights(model, state, f"checkpoint {source}")
    return model


def _load_weights(model: nn.Module, state: dict[str, Any], where: str) -> None:
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError:
        raise UserError(f"{where} does not fit model {state['model']!r} "
                        "(mismatched weights)") from None


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
