"""The sweep file: a pydantic model in the run spec's style, checked against the run spec.

    python -m ddpcifar.sweep schema --out specs/sweep.schema.json

A sweep names a base run spec (a file plus overrides), a search space keyed by spec field path,
replicate seeds, an objective, a trial budget, a sampler and a pruner. Everything that can be
refused is refused here, before a trial starts: a path the run spec does not have, bounds or
choices the run spec itself refuses, a base spec that does not validate, a sampler that cannot
search the space.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ddpcifar.errors import UserError
from ddpcifar.spec import (RunSpec, apply_overrides, check_data, format_validation_error,
                           read_json_object)

SWEEP_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Fields every trial's spec gets from the sweep: the space may not set them.
SWEEP_SETS = ("logging.runs_dir", "logging.run_name", "logging.progress", "train.seed",
              "eval.every", "data.val_size", "data.val_seed")
METRICS = ("val_top1", "val_top5", "val_loss", "top1", "top5", "loss", "top1_tta")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatParam(Section):
    type: Literal["float"]
    low: float = Field(description="Lower bound (included).")
    high: float = Field(description="Upper bound (included).")
    log: bool = Field(False, description="Sample on a log scale (low > 0).")


class IntParam(Section):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)


class ChoiceParam(Section):
    type: Literal["categorical"]
    choices: list[Union[bool, int, float, str, None]] = Field(min_length=1)


Param = Annotated[Union[FloatParam, IntParam, ChoiceParam], Field(discriminator="type")]


class BaseSection(Section):
    spec: Path = Field(description="The run spec every trial starts from (relative to the "
                                   "directory the sweep runs in).")
    overrides: list[str] = Field([], description="`section.key=VALUE` changes to it, as --set.")


class ObjectiveSection(Section):
    metric: Literal[METRICS] = Field(  # type: ignore[valid-type]
        "val_top1", description="What a trial scores: the final evaluation's validation metric "
                                "(val_*) or test metric, averaged over the seeds.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="null: minimize losses, maximize accuracies.")

    @property
    def maximize(self) -> bool:
        return (self.direction or ("minimize" if "loss" in self.metric else "maximize")) \
            == "maximize"

    @property
    def report_metric(self) -> str:
        """What intermediate evaluations report (TTA is only computed at the end)."""
        return self.metric.removesuffix("_tta")


class SamplerSection(Section):
    kind: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = Field(0, ge=0, description="The sampler's seed: the same sweep asks for the "
                                           "same parameters.")
    startup_trials: int = Field(4, ge=0, le=1000, description="tpe: random trials first.")


class PrunerSection(Section):
    kind: Literal["none", "median", "successive_halving", "hyperband"] = "median"
    startup_trials: int = Field(3, ge=0, le=1000, description="median: trials that are never "
                                                              "pruned, to learn the median.")
    warmup_epochs: int = Field(1, ge=0, le=1000, description="median: the first epoch after "
                                                             "whose evaluation a trial may be "
                                                             "pruned (0: from any).")


class ValidationSection(Section):
    size: float = Field(5000, ge=0, description="data.val_size of every trial: images held out "
                                                "of the train split (0: none, then the "
                                                "objective must be a test metric).")
    seed: int = Field(0, ge=0, description="data.val_seed: the same split for every trial.")


class SweepSpec(Section):
    """A whole sweep."""

    schema_ref: str | None = Field(None, alias="$schema", description="Editor hint; ignored.")
    version: Literal[1] = SWEEP_VERSION
    name: str = Field(description="The sweep's directory name under runs_dir (letters, digits, "
                                  "'.', '_', '-').")
    runs_dir: Path = Field(Path("runs"), description="Parent of the sweep's directory.")
    base: BaseSection
    space: dict[str, Param] = Field({}, description="Spec field path -> distribution. Empty: "
                                                    "a seeds-only repeat of the base spec.")
    seeds: list[int] = Field([0], min_length=1, description="Each configuration runs once per "
                                                            "seed (train.seed); the objective "
                                                            "is their mean.")
    objective: ObjectiveSection = ObjectiveSection()
    trials: int = Field(ge=1, le=100_000, description="Complete plus pruned trials to reach, "
                                                      "over every worker (failed ones are "
                                                      "retried, not counted).")
    sampler: SamplerSection = SamplerSection()
    pruner: PrunerSection = PrunerSection()
    validation: ValidationSection = ValidationSection()
    ranks: int = Field(1, ge=1, le=1024, description="torchrun --nproc_per_node of each trial.")
    threads: int | None = Field(None, ge=1, le=1024, description="OMP_NUM_THREADS of each rank "
                                                                 "(null: torchrun's default).")
    storage: str | None = Field(None, description="null: the journal file in the sweep "
                                                  "directory. A path: a journal file (shared "
                                                  "file system). A URL: a database, e.g. "
                                                  "postgresql://user@host:5432/db.")
    retries: int = Field(2, ge=0, le=100, description="Times a failed configuration is run "
                                                      "again (a dead worker's, a crash).")
    heartbeat_s: float = Field(10, gt=0, le=3600, description="How often a worker says its "
                                                              "trial is alive; a trial silent for "
                                                              "3x this is failed and retried.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        if not _NAME.match(self.name) or ".." in self.name:
            raise ValueError(f"name {self.name!r} must be 1-128 of letters, digits, '.', '_', '-'")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed")
        for path, param in self.space.items():
            if path in SWEEP_SETS:
                raise ValueError(f"space.{path}: the sweep sets this field itself "
                                 f"(seeds: use `seeds`; validation: use `validation`)")
            if isinstance(param, (FloatParam, IntParam)):
                if param.low > param.high:
                    raise ValueError(f"space.{path}: low={param.low} is above high={param.high}")
                if param.log and param.low <= 0:
                    raise ValueError(f"space.{path}: a log scale needs low > 0, got {param.low}")
        if self.objective.metric.startswith("val_") and self.validation.size == 0:
            raise ValueError(f"objective.metric={self.objective.metric!r} needs a validation "
                             "split (validation.size > 0)")
        if self.sampler.kind == "grid":
            ranged = [p for p, v in self.space.items() if not isinstance(v, ChoiceParam)]
            if ranged or not self.space:
                raise ValueError(f"sampler.kind='grid' needs categorical choices for every "
                                 f"parameter (ranged: {', '.join(ranged) or 'no space'})")
        return self

    @property
    def directory(self) -> Path:
        return self.runs_dir / self.name

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"schema_ref"})


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep file; a one-line UserError for any problem."""
    path = Path(path)
    data = read_json_object(path, "sweep")
    data.setdefault("name", path.stem)
    return validate_sweep(data, overrides or [], str(path))


def validate_sweep(data: dict[str, Any], overrides: list[str], source: str) -> SweepSpec:
    """Sweep data (a file's, or a sweep directory's record) with `overrides`, validated."""
    data = apply_overrides(data, overrides, top_level=True)
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source, "sweep")) from None


def base_spec_data(sweep: SweepSpec, cwd: Path) -> dict[str, Any]:
    """The base run spec with its overrides and the sweep's own settings, as JSON data."""
    try:
        data = read_json_object(cwd / sweep.base.spec)
    except UserError as err:
        raise UserError(f"base.spec: {err}") from None
    data = apply_overrides(data, sweep.base.overrides)
    return apply_overrides(data, [f"data.val_size={sweep.validation.size:g}",
                                  f"data.val_seed={sweep.validation.seed}", "eval.every=1",
                                  "logging.progress=false"])


def _has_field(path: str) -> bool:
    """True if `path` names a field of the run spec (a leaf or a section)."""
    model: Any = RunSpec
    for key in path.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or key not in fields:
            return False
        annotation = fields[key].annotation
        model = next((a for a in getattr(annotation, "__args__", (annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), annotation)
    return True


def check_against_spec(sweep: SweepSpec, cwd: Path) -> dict[str, Any]:
    """Refuse, in one line naming the field, anything the run spec would refuse in a trial;
    returns the base spec data."""
    base = base_spec_data(sweep, cwd)
    problems = check_data(base, world_size=sweep.ranks)
    if problems:
        loc, msg = problems[0]
        raise UserError(f"base: the spec does not validate: {loc}: {msg}")
    for path, param in sweep.space.items():
        if not _has_field(path):
            raise UserError(f"space.{path}: not a field of the run spec")
        values: list[tuple[str, Any]] = (
            [("choice", c) for c in param.choices] if isinstance(param, ChoiceParam)
            else [("low", param.low), ("high", param.high)])
        for what, value in values:
            trial = apply_overrides(base, [f"{path}={json.dumps(value)}"])
            problems = check_data(trial, world_size=sweep.ranks)
            if problems:
                loc, msg = problems[0]
                raise UserError(f"space.{path}: {what}={json.dumps(value)} is refused by the "
                                f"run spec: {loc}: {msg}")
    return base
