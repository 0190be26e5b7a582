"""The run spec: one pydantic section per component, validated when the spec is loaded.

A spec is a JSON file (examples in `specs/`). `--set section.key=VALUE` overrides go through the
same models, so a typo fails at load time with the field's name instead of deep in training.

    python -m ddpcifar.spec schema --out specs/schema.json   # JSON Schema for editor completion
    python -m ddpcifar.spec check specs/era_s9.json [--set train.epochs=2] [--world-size 4]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_serializer,
                      field_validator, model_validator)

from ddpcifar.data.config import AugmentConfig, DataConfig, check_compatible
from ddpcifar.errors import UserError, cli_main
from ddpcifar.catalog import model_names, whitening_stem_models

SPEC_VERSION = 1
# The NumPy engine's network is not a torch module, so it is not in the model registry.
SCRATCH_MODEL = "scratch_cnn"


class Section(BaseModel):
    """Base for every spec section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BatchNormConfig(Section):
    """Overrides applied to every BatchNorm layer of the model after it is built."""

    momentum: float | None = Field(
        None, gt=0, le=1, description="Running-statistics momentum in PyTorch's convention (weight "
                                      "of the new batch; airbench's 0.6 is 0.4 here). null: the "
                                      "model's own.")
    eps: float | None = Field(None, gt=0, le=1, description="Added to the variance. null: the "
                                                            "model's own.")
    train_scale: bool = Field(True, description="false: freeze every BatchNorm scale at 1 "
                                                "(only the shift is trained).")


class WhiteningConfig(Section):
    """A frozen first layer that whitens k x k patches (the model must have a whitening stem)."""

    samples: int = Field(5000, ge=1, le=1_000_000, description="Training images (evenly spaced "
                                                               "over the split, normalised) whose patch "
                                                               "covariance sets the filters.")
    eps: float = Field(5e-4, gt=0, description="Added to each eigenvalue before 1/sqrt.")
    bias_epochs: float = Field(3.0, ge=0, description="Train the stem's bias for this many "
                                                      "epochs, then freeze it (its lr drops to 0).")
    bias_lr_scale: float = Field(1.0, gt=0, description="The stem bias's lr as a multiple of "
                                                        "optimizer.lr.")
    bias_decay: bool = Field(False, description="true: the stem bias's lr falls linearly from its "
                                                "peak to 0 at bias_epochs (airbench94_muon) "
                                                "instead of following the schedule.")


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class ModelConfig(Section):
    name: str = Field(description="Model variant: one of the registry's names, or 'scratch_cnn' "
                                  "for the NumPy engine.")
    channels_last: bool = Field(True, description="Run convolutions in channels_last memory format.")
    compile: bool | CompileMode = Field(
        False, description="torch.compile the model (under DDP, the DDP module): false (eager), "
                           "true (= 'default'), or a torch.compile mode. The graphs are compiled "
                           "before the first step on throwaway inputs (the state is restored), "
                           "timed as summary.json's timing.compile_s and left out of "
                           "time_to_accuracy_s, as airbench counts a warmed-up run.")
    batchnorm: BatchNormConfig = Field(BatchNormConfig(), description="BatchNorm overrides.")
    whitening: WhiteningConfig | None = Field(
        None, description="Initialise the model's whitening stem from the training data and freeze "
                          "its weights; null: the stem (if any) trains like any layer.")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value: Any) -> Any:
        if isinstance(value, bool) or value in get_args(CompileMode):
            return value
        raise ValueError(f"allowed: false, true or a torch.compile mode "
                         f"({', '.join(get_args(CompileMode))})")

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        allowed = (*model_names(), SCRATCH_MODEL)
        if name not in allowed:
            raise ValueError(f"unknown model {name!r}; allowed: {', '.join(allowed)}")
        return name

    @property
    def engine(self) -> Literal["torch", "numpy"]:
        return "numpy" if self.name == SCRATCH_MODEL else "torch"

    @property
    def compile_mode(self) -> CompileMode | None:
        """The torch.compile mode, or None for an eager model."""
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile


class OptimizerConfig(Section):
    name: Literal["sgd", "adamw", "muon"] = Field(
        "sgd", description="SGD (with momentum), AdamW, or 'muon': torch.optim.Muon for the "
                           "convolution filters (4-d weights) and SGD for everything else.")
    lr: float = Field(0.1, gt=0, le=100_000, description="Peak learning rate, reached after warmup "
                                                         "(in `units`).")
    units: Literal["torch", "per1024"] = Field(
        "torch", description="'torch': lr and weight_decay as torch.optim takes them. 'per1024' "
                             "(SGD, muon): given per 1024 examples of summed loss and independent "
                             "of momentum: lr_torch = lr / (1024 (1 + 1/(1 - momentum))), and the "
                             "decay per step is weight_decay * batch / (1024 (1 + 1/(1 - momentum))).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(True, description="Nesterov momentum (SGD only, needs momentum > 0).")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 weight decay (decoupled for AdamW).")
    weight_decay_mode: Literal["l2", "decoupled"] = Field(
        "l2", description="SGD, muon: 'l2' adds weight_decay * w to the gradient (the step then "
                          "scales with each group's lr); 'decoupled' shrinks w by weight_decay "
                          "(times the schedule's factor) per step whatever the group's lr.")
    norm_lr_scale: float = Field(1.0, gt=0, le=10_000, description="lr multiplier for BatchNorm "
                                                                    "parameters (weight decay "
                                                                    "unchanged when decoupled).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1).")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    muon_lr: float = Field(0.24, gt=0, le=10, description="muon: lr of the convolution filters "
                                                          "(torch units, follows the schedule).")
    muon_momentum: float = Field(0.6, ge=0, lt=1, description="muon: momentum of the filters.")
    muon_normalize: bool = Field(True, description="muon: rescale each filter tensor to norm "
                                                   "sqrt(out_channels) before each step.")
    muon_ns_steps: int = Field(5, ge=1, le=20, description="muon: Newton-Schulz iterations "
                                                           "that orthogonalise each update.")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"each beta must be in [0, 1), got {list(betas)}")
        return betas

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "OptimizerConfig":
        if self.name in ("sgd", "muon") and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs momentum > 0 (set optimizer.nesterov=false "
                             "or optimizer.momentum>0)")
        if self.name == "adamw" and (self.units != "torch" or self.weight_decay_mode != "l2"):
            raise ValueError("adamw takes lr and weight_decay in torch units with its own "
                             "decoupled decay (allowed: units='torch', weight_decay_mode='l2')")
        return self


class ScheduleConfig(Section):
    name: Literal["onecycle", "triangular", "cosine", "step", "constant"] = Field(
        "onecycle", description="Learning-rate shape over the run; all are per-step. 'triangular' "
                                "rises linearly from start_factor to 1 at peak_epoch, then falls "
                                "linearly to final_factor (airbench's warmup/warmdown).")
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warmup from start_factor to the peak.")
    start_factor: float = Field(0.0, ge=0, le=1, description="Warmup starts at lr * start_factor.")
    peak_epoch: float = Field(
        0.3, ge=0, description="onecycle/triangular: where the peak sits; a value < 1 is a "
                               "fraction of the run, >= 1 an epoch.")
    final_factor: float = Field(0.0, ge=0, le=1, description="lr at the end = lr * final_factor.")
    step_epochs: int = Field(10, ge=1, description="step: decay every this many epochs.")
    gamma: float = Field(0.1, gt=0, le=1, description="step: multiply lr by gamma at each step.")


class AveragingConfig(Section):
    """Weight averaging: lookahead (the live weights are reset to the average) or a plain EMA."""

    kind: Literal["none", "lookahead", "ema"] = Field(
        "none", description="'lookahead': every `every` steps the average moves toward the live "
                            "weights and the live weights are reset to it; at the end the average "
                            "replaces the weights. 'ema': an exponential moving average updated "
                            "every `every` steps; evaluations and best.pt use it, and it replaces "
                            "the weights at the end.")
    every: int = Field(5, ge=1, le=100_000, description="Steps between updates.")
    decay: float = Field(0.95, ge=0, lt=1, description="Per-step decay; an update every k steps "
                                                       "uses decay**k.")
    power: float = Field(3.0, ge=0, le=100, description="lookahead: the decay ramps as "
                                                        "decay**every * (step/total)**power.")
    start_epochs: float = Field(0.0, ge=0, description="No averaging before this epoch; the "
                                                       "average starts as a copy of the weights "
                                                       "at the first update after it.")


class TrainConfig(Section):
    epochs: float = Field(description="Number of epochs to train; a fraction stops inside "
                                      "the last epoch (total steps rounded up).",
                          gt=0, le=10_000)
    @field_serializer("epochs")
    def _whole_epochs_as_int(self, epochs: float) -> float | int:
        return int(epochs) if float(epochs).is_integer() else epochs

    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="Cross-entropy over the global batch: 'mean' or 'sum' (airbench). "
                            "Either way the gradient equals a one-process run's.")
    averaging: AveragingConfig = Field(AveragingConfig(), description="Weight averaging.")
    global_batch_size: int = Field(512, ge=1, le=65_536,
                                   description="Batch size summed over all ranks; must divide by "
                                               "the world size.")
    micro_batch_size: int | None = Field(
        None, ge=1, le=65_536,
        description="Gradient accumulation: the most images one rank puts through one forward "
                    "and backward. Each rank's share of the global batch is split into "
                    "micro-batches of this size (the last may be smaller) whose gradients add up "
                    "before the one optimizer step, so the update is the full batch's; BatchNorm "
                    "normalises each micro-batch apart. null: the whole share at once. On CPU a "
                    "smaller forward can be faster per image (docs/speed.md).")
    seed: int = Field(0, ge=0, description="Seeds weights, data order and augmentation.")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype. auto: bf16 on CPU and on CUDA GPUs that support it "
                            "(no gradient scaler, so no per-step host-device sync), fp16 with a "
                            "gradient scaler on older GPUs. fp16 needs CUDA.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the global grad norm to this value.")
    deterministic: bool = Field(True, description="Deterministic algorithms (CPU runs are then "
                                                  "repeatable for a seed and world size). On by "
                                                  "default for repeatability; its cost is on CUDA: "
                                                  "no TF32 and no cudnn.benchmark autotuning, "
                                                  "often 1.5-3x slower steps. Set false for speed "
                                                  "runs.")
    log_every: int = Field(20, ge=1, description="Write a train line to metrics.jsonl every N steps.")


class EvalConfig(Section):
    batch_size: int = Field(1000, ge=1, le=65_536, description="Global evaluation batch size.")
    every: int = Field(1, ge=1, description="Evaluate every N epochs (and always after the last).")
    max_samples: int = Field(100, ge=0, le=10_000,
                             description="Misclassified test images saved per evaluation.")
    tta: Literal[0, 1, 2] = Field(
        0, description="Test-time augmentation, reported as top1_tta beside top1: 0 none, 1 mirror "
                       "(mean logits of the image and its mirror), 2 mirror plus the mirror pair "
                       "of two 1-pixel translations (reflect-padded), weighted 1/2, 1/4, 1/4.")
    tta_every_eval: bool = Field(False, description="Compute TTA at every evaluation (false: only "
                                                    "the final one; it costs 2 or 6 forward passes).")
    tta_threshold: float | None = Field(
        None, ge=-1, le=1, description="Selective TTA: only the images whose plain prediction has a "
                                       "confidence (max softmax probability) at most this get "
                                       "the augmented views; the others keep the plain "
                                       "prediction. 1.0 is full TTA, a negative value none; "
                                       "null: full TTA. The count is reported as tta_images.")


class CheckpointConfig(Section):
    every_epochs: int = Field(1, ge=1, description="Write checkpoints/last.pt every N epochs.")
    every_steps: int | None = Field(
        None, ge=1, description="Also write checkpoints/last.pt every N optimizer steps, inside "
                                "epochs: a restart then redoes at most N steps. null: epoch ends only.")
    save_best: bool = Field(True, description="Keep checkpoints/best.pt, lowest test loss so far.")


class ScratchSection(Section):
    """Settings only the NumPy engine (model 'scratch_cnn') reads."""

    architecture: list[dict[str, Any]] | None = Field(
        None, description="Ordered module definitions, e.g. {\"type\": \"conv\", \"out\": 32, "
                          "\"kernel\": 3, \"padding\": 1}; null: the default network.")
    dtype: Literal["float32", "float64"] = Field("float32", description="NumPy compute dtype.")
    blas_threads: int | None = Field(None, ge=1, le=256, description="BLAS threads (null: default).")


class DistributedConfig(Section):
    timeout_s: float = Field(300.0, gt=0, le=86_400,
                             description="Process-group timeout: a rank that stops answering "
                                         "becomes an error on the others after this long.")


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class LoggingConfig(Section):
    runs_dir: Path = Field(Path("runs"), description="Parent of the run directories.")
    run_name: str = Field(description="Run directory name: letters, digits, '.', '_', '-'; no "
                                      "path separators, no '..'.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files under tb/.")
    progress: bool = Field(True, description="Rich progress bar on rank 0.")
    resume: Literal["explicit", "auto"] = Field(
        "explicit", description="'explicit': an existing run directory is refused unless "
                                "--resume is passed. 'auto' (as --resume auto): continue the run "
                                "directory from its checkpoint if it has one, else start fresh in "
                                "it, so the same command can be submitted again after a crash or "
                                "a SLURM requeue. An elastic restart always resumes.")
    sample_indices: bool = Field(False, description="Debug: every rank writes the split positions "
                                                    "of each training step's batch to "
                                                    "indices/rank<R>.jsonl (checks the sample "
                                                    "order across resumes and world sizes).")

    @field_validator("run_name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _RUN_NAME.match(name) or ".." in name:
            raise ValueError(f"run name {name!r} must be 1-128 of letters, digits, '.', '_', '-', "
                             "start with a letter or digit, and contain no '..' or path separator")
        return name


class RunSpec(Section):
    """A whole run. `context={"world_size": W}` enables the checks that depend on the launch."""

    schema_ref: str | None = Field(None, alias="$schema", description="Editor hint; ignored.")
    version: Literal[1] = Field(SPEC_VERSION, description="Spec format version.")
    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig
    distributed: DistributedConfig = DistributedConfig()
    scratch: ScratchSection = ScratchSection()

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: Any) -> Any:
        """scratch.val_fraction became data.val_size (both engines): old specs still load."""
        if isinstance(data, dict) and isinstance(data.get("scratch"), dict) \
                and "val_fraction" in data["scratch"]:
            data = {**data, "scratch": dict(data["scratch"])}
            fraction = data["scratch"].pop("val_fraction")
            section = dict(data.get("data") or {})
            section.setdefault("val_size", fraction)
            data["data"] = section
        return data

    @model_validator(mode="after")
    def _launch_checks(self, info: ValidationInfo) -> "RunSpec":
        world = (info.context or {}).get("world_size", 1)
        check_compatible(self.data, self.augment)
        for key, batch in (("train.global_batch_size", self.train.global_batch_size),
                           ("eval.batch_size", self.eval.batch_size)):
            if batch % world:
                raise ValueError(f"{key}={batch} is not divisible by the world size {world} "
                                 f"(allowed: a multiple of {world})")
        if self.train.amp == "fp16" and not (info.context or {}).get("cuda", False):
            raise ValueError("train.amp='fp16' needs CUDA; on CPU use 'bf16', 'auto' or 'off'")
        if self.eval.tta_threshold is not None and not self.eval.tta:
            raise ValueError(f"eval.tta_threshold={self.eval.tta_threshold} selects images for "
                             "test-time augmentation, which eval.tta=0 turns off (set eval.tta "
                             "to 1 or 2, or eval.tta_threshold to null)")
        if self.model.engine == "numpy":
            self._numpy_engine_checks(world)
        else:
            self._torch_engine_checks()
        return self

    def _torch_engine_checks(self) -> None:
        if self.model.whitening is not None and self.model.name not in whitening_stem_models():
            raise ValueError(f"model.whitening: model {self.model.name!r} has no whitening stem "
                             f"(allowed models: {', '.join(whitening_stem_models())})")

    def _numpy_engine_checks(self, world: int) -> None:
        """Refuse every value the NumPy engine cannot honour, so a spec means the same in both
        engines; ddpcifar/engine/numpy_runner.py then copies the spec without checks of its own.

        Honoured there: train.epochs/global_batch_size/seed/log_every/label_smoothing/grad_clip,
        optimizer.lr/momentum/nesterov/weight_decay, all of schedule (ddpcifar.schedule),
        augment.kind/flip_p/translate/translate_pad/cutout, eval.batch_size/every/max_samples,
        checkpoint.save_best, data.dir/max_samples/val_size/val_seed, logging.* (resume and
        sample_indices at their defaults only, refused below), scratch.*.
        Ignored, as they cannot change what it computes: data.num_workers and data.os_cache
        (loader speed), train.deterministic (the NumPy engine is deterministic for a seed
        anyway), train.amp='auto' (scratch.dtype decides), optimizer.betas/eps/muon_* (other
        optimizers, refused below), augment.affine_p/shift/scale/rotate/dropout_p/dropout_size
        (albumentations only, refused below), eval.tta_every_eval, eval.tta_threshold and train.averaging.every/
        decay/power/start_epochs (only with eval.tta / averaging, refused below), distributed.timeout_s.
        """
        if world > 1:
            raise ValueError(f"model {SCRATCH_MODEL!r} runs on the NumPy engine in one process; "
                             f"launch it without torchrun (world size is {world})")
        o, t, m, a, c = self.optimizer, self.train, self.model, self.augment, self.checkpoint
        refusals = [
            (o.name != "sgd", f"optimizer.name={o.name!r}: the NumPy engine has SGD with "
                              "momentum only (allowed: 'sgd')"),
            (o.units != "torch", f"optimizer.units={o.units!r}: the NumPy engine takes lr and "
                                 "weight_decay in torch units (allowed: 'torch')"),
            (o.weight_decay_mode != "l2", f"optimizer.weight_decay_mode={o.weight_decay_mode!r}: "
                                          "the NumPy engine adds L2 to the gradient (allowed: 'l2')"),
            (o.norm_lr_scale != 1, f"optimizer.norm_lr_scale={o.norm_lr_scale}: the NumPy network "
                                   "has no normalisation layers (allowed: 1.0)"),
            (t.epochs != int(t.epochs), f"train.epochs={t.epochs}: the NumPy engine trains whole "
                                        "epochs (allowed: an integer)"),
            (t.amp in ("bf16", "fp16"), f"train.amp={t.amp!r}: the NumPy engine computes in "
                                        "scratch.dtype without autocast (allowed: 'auto', 'off')"),
            (t.loss_reduction != "mean", f"train.loss_reduction={t.loss_reduction!r}: the NumPy "
                                         "engine averages the loss over the batch (allowed: 'mean')"),
            (t.micro_batch_size is not None, f"train.micro_batch_size={t.micro_batch_size}: the "
                                             "NumPy engine steps on whole batches (allowed: null)"),
            (t.averaging.kind != "none", f"train.averaging.kind={t.averaging.kind!r}: the NumPy "
                                         "engine has no weight averaging (allowed: 'none')"),
            (m.compile is not False, f"model.compile={json.dumps(m.compile)}: the NumPy engine "
                                     "has nothing to compile (allowed: false)"),
            (not m.channels_last, "model.channels_last=false: the NumPy engine's arrays are "
                                  "always NHWC (allowed: true)"),
            (m.batchnorm != type(m.batchnorm)(),
             f"model.batchnorm={json.dumps(m.batchnorm.model_dump())}: the NumPy network has no "
             "BatchNorm (allowed: the defaults)"),
            (m.whitening is not None,
             f"model.whitening={json.dumps(m.whitening and m.whitening.model_dump())}: the NumPy "
             "network has no whitening stem (allowed: null)"),
            (self.data.loader != "memory", f"data.loader={self.data.loader!r}: the NumPy engine "
                                           "reads both splits into memory (allowed: 'memory')"),
            (a.kind == "albumentations", "augment.kind='albumentations': the NumPy engine "
                                         "supports 'none' and 'basic' (flip + translate + cutout)"),
            (a.kind == "basic" and a.flip_mode != "random",
             f"augment.flip_mode={a.flip_mode!r}: the NumPy engine flips at random every epoch "
             "(allowed: 'random')"),
            (self.eval.tta != 0, f"eval.tta={self.eval.tta}: the NumPy engine has no test-time "
                                 "augmentation (allowed: 0)"),
            (c.every_epochs != 1, f"checkpoint.every_epochs={c.every_epochs}: the NumPy engine "
                                  "does not resume and writes no last.pt (allowed: 1)"),
            (c.every_steps is not None, f"checkpoint.every_steps={c.every_steps}: the NumPy engine "
                                        "does not resume and writes no last.pt (allowed: null)"),
            (self.logging.resume != "explicit", f"logging.resume={self.logging.resume!r}: the "
                                                "NumPy engine does not resume (allowed: 'explicit')"),
            (self.logging.sample_indices, "logging.sample_indices=true: the NumPy engine keeps no "
                                          "per-step index log (allowed: false)"),
        ]
        for refused, message in refusals:
            if refused:
                raise ValueError(message)
        if self.scratch.architecture is not None:
            from ddpcifar.scratch.network import Sequential  # NumPy only; checks each layer

            try:
                Sequential(self.scratch.architecture)
            except UserError as err:
                raise ValueError(f"scratch.{err}") from None

    @property
    def run_dir(self) -> Path:
        return self.logging.runs_dir / self.logging.run_name

    def resolved(self) -> dict[str, Any]:
        """The spec as plain JSON data, as saved in the run directory and in checkpoints."""
        return self.model_dump(mode="json", exclude={"schema_ref"})


def parse_override(text: str, *, top_level: bool = False) -> tuple[list[str], Any]:
    """Split `section.key=VALUE` (or `key=VALUE` with `top_level`); VALUE is JSON when it
    parses as JSON, else a plain string."""
    path, sep, raw = text.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys) or len(keys) < (1 if top_level else 2):
        example = "trials=8" if top_level else "train.epochs=2"
        raise UserError(f"bad --set {text!r}: expected {'' if top_level else 'section.'}"
                        f"key=VALUE, e.g. {example}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], *,
                    top_level: bool = False) -> dict[str, Any]:
    """Return a copy of `data` with each `section.key=VALUE` applied (validated later)."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        keys, value = parse_override(text, top_level=top_level)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise UserError(f"bad --set {text!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    """(field path, message) per problem; the path is "(spec)" for a check across fields.

    The message names the bad value and what is allowed; a form shows it under its field.
    """
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(spec)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parts.append((loc, "unknown key"))
        elif e["type"] == "missing":
            parts.append((loc, "required field is missing"))
        elif loc == "(spec)":
            parts.append((loc, msg))
        else:
            parts.append((loc, f"{json.dumps(e.get('input'), default=str)}: {msg}"))
    return parts


def format_validation_error(err: ValidationError, source: str, noun: str = "spec") -> str:
    """One line per problem, each naming the field, the bad value and what is allowed."""
    parts = [msg if loc == "(spec)" else f"{loc}: {msg}" if msg in ("unknown key",
             "required field is missing") else f"{loc}={msg}"
             for loc, msg in validation_problems(err)]
    return f"invalid {noun} {source}: " + "; ".join(parts)


def read_json_object(path: Path, noun: str = "spec") -> dict[str, Any]:
    """A JSON object from `path` (a spec, a sweep file); any problem is one UserError line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{noun} file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {noun} {path}: {err.__class__.__name__}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{noun} {path} is not valid JSON: {err.msg} at line {err.lineno} "
                        f"column {err.colno}") from None
    if not isinstance(data, dict):
        raise UserError(f"{noun} {path} must be a JSON object, got {type(data).__name__}")
    return data


def check_data(data: dict[str, Any], *, world_size: int = 1,
               cuda: bool = False) -> list[tuple[str, str]]:
    """Validate spec data (after overrides) without raising: its problems, [] when valid."""
    try:
        RunSpec.model_validate(data, context={"world_size": world_size, "cuda": cuda})
    except ValidationError as err:
        return validation_problems(err)
    return []


def load_spec(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    world_size: int = 1,
    cuda: bool = False,
) -> RunSpec:
    """Read, override and validate a spec file; any problem is one UserError line."""
    path = Path(path)
    data = apply_overrides(read_json_object(path), overrides)
    try:
        return RunSpec.model_validate(data, context={"world_size": world_size, "cuda": cuda})
    except ValidationError as err:
        raise UserError(format_validation_error(err, str(path))) from None


def json_schema() -> dict[str, Any]:
    schema = RunSpec.model_json_schema(by_alias=True)
    schema["$id"] = "https://ddpcifar.local/spec.schema.json"
    schema["title"] = "ddpcifar run spec"
    return schema


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpcifar.spec",
                                     description="Export the run-spec JSON Schema, or check a spec.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_schema = sub.add_parser("schema", help="print or write the JSON Schema")
    p_schema.add_argument("--out", type=Path, help="write here instead of stdout")
    p_check = sub.add_parser("check", help="validate a spec and print it resolved")
    p_check.add_argument("spec", type=Path)
    p_check.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="SECTION.KEY=VALUE", help="override a field (repeatable)")
    p_check.add_argument("--world-size", type=int, default=1, help="check for this many ranks")
    args = parser.parse_args(argv)

    if args.command == "schema":
        from ddpcifar.atomic import write_text_or_print

        write_text_or_print(json.dumps(json_schema(), indent=2) + "\n", args.out)
        return 0
    spec = load_spec(args.spec, args.overrides, world_size=args.world_size)
    print(json.dumps(spec.resolved(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
