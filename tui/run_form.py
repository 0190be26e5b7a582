"""The new-run form's logic, without widgets: its fields, their validation and the command.

A form starts from a base spec (a file in specs/, or a run's own spec.json for a clone) and
turns what the user changed into `--set` overrides, so the command it shows is the one that
runs: `torchrun --standalone --nproc_per_node=N -m ddpcifar.train SPEC --set ...`. Validation
is the run spec's own (ddpcifar.spec, torch-free), each problem shown under the field it names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ddpcifar.errors import UserError
from ddpcifar.runs.launch import display, train_command
from pydantic import ValidationError

from ddpcifar.spec import RunSpec, apply_overrides, check_data, parse_override

MAX_NPROC = 64


@dataclass(frozen=True)
class FormField:
    key: str  # the widget id suffix
    path: str | None  # the spec field it sets (None: not a spec field)
    label: str


FIELDS: tuple[FormField, ...] = (
    FormField("name", "logging.run_name", "run name"),
    FormField("nproc", None, "ranks"),
    FormField("epochs", "train.epochs", "epochs"),
    FormField("lr", "optimizer.lr", "learning rate"),
    FormField("batch", "train.global_batch_size", "global batch"),
    FormField("seed", "train.seed", "seed"),
)
FREE = "overrides"  # the free `--set` field


@dataclass(frozen=True)
class Source:
    """What the form starts from: a spec file, or a run directory (a clone)."""

    path: Path  # the spec file (a run's spec.json for a clone)
    label: str
    run_dir: Path | None = None  # set for a clone
    cwd: Path | None = None  # where a clone's relative paths resolve (its launch directory)

    @property
    def clone(self) -> bool:
        return self.run_dir is not None


@dataclass
class FormCheck:
    """The form's state after a change: errors per field, the overrides and the command."""

    errors: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    command: str = ""
    nproc: int = 1

    @property
    def ok(self) -> bool:
        return not self.errors


def free_name(runs_dir: Path, name: str) -> str:
    """`name` if no run has it in `runs_dir`, else the next free `name-k`."""
    if not (runs_dir / name).exists():
        return name
    from ddpcifar.runs.control import next_free_name

    return next_free_name(runs_dir, name)


def spec_sources(specs_dir: Path) -> list[Source]:
    """The example specs a form can start from (not the schema, not sweep files)."""
    if not specs_dir.is_dir():
        return []
    return [Source(p, f"{specs_dir.name}/{p.name}") for p in sorted(specs_dir.glob("*.json"))
            if p.name != "schema.json" and not p.name.startswith("sweep")]


def read_base(source: Source) -> dict[str, Any]:
    """The base spec's JSON; a UserError line when it cannot be read."""
    try:
        data = json.loads(source.path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {source.label}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{source.label} is not a JSON object")
    return data


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def resolved(base: dict[str, Any]) -> dict[str, Any]:
    """The base spec with every default filled in (as the run will see it), if it validates."""
    try:
        return RunSpec.model_validate(base).resolved()
    except ValidationError:
        return base


def initial_values(base: dict[str, Any], *, name: str | None = None,
                   nproc: int = 1) -> dict[str, str]:
    """The fields as the base spec has them, defaults included (a clone's name is the new one)."""
    full = resolved(base)
    values = {f.key: _text(_get(full, f.path)) for f in FIELDS if f.path}
    values["nproc"] = str(nproc)
    if name is not None:
        values["name"] = name
    values[FREE] = ""
    return values


def check_form(source: Source, base: dict[str, Any], values: dict[str, str], *,
               runs_dir: Path, cwd: Path) -> FormCheck:
    """Validate the form as the run will be validated; the overrides it makes and its command.

    `cwd` is where the run will start (a clone starts where its original did).
    """
    cwd = source.cwd or cwd
    check = FormCheck()
    original = initial_values(base)
    for f in FIELDS:
        if f.path and values.get(f.key, "") != original.get(f.key, ""):
            check.overrides.append(f"{f.path}={values.get(f.key, '').strip()}")
    try:
        check.nproc = int(values.get("nproc", "1"))
        if not 1 <= check.nproc <= MAX_NPROC:
            raise ValueError
    except ValueError:
        check.errors["nproc"] = f"a whole number from 1 to {MAX_NPROC}"
        check.nproc = 1
    free = values.get(FREE, "").split()
    for word in free:
        try:
            parse_override(word)
        except UserError as err:
            check.errors[FREE] = str(err)
    check.overrides += free
    # The run must land in the runs directory this dashboard shows.
    spec_runs = _get(base, "logging.runs_dir") or "runs"
    if (cwd / str(spec_runs)).resolve() != runs_dir.resolve() and not _sets(free, "logging.runs_dir"):
        check.overrides.append(f"logging.runs_dir={_relative(runs_dir, cwd)}")
    if FREE not in check.errors:
        try:
            data = apply_overrides(base, check.overrides)
        except UserError as err:
            check.errors[FREE] = str(err)
            data = None
        if data is not None:
            for loc, message in check_data(data, world_size=check.nproc):
                _attach(check.errors, loc, message)
            name = _get(data, "logging.run_name")
            target = cwd / str(_get(data, "logging.runs_dir") or "runs") / str(name or "")
            if name and "name" not in check.errors and target.exists():
                check.errors["name"] = f"{target} already exists"
    check.command = display(train_command(spec_argument(source, cwd), check.overrides,
                                          nproc=check.nproc))
    return check


def spec_argument(source: Source, cwd: Path) -> str:
    """The spec as the command names it: relative to where the run starts, a clone's whole."""
    return str(source.path) if source.clone else _relative(source.path, source.cwd or cwd)


def _sets(words: Sequence[str], path: str) -> bool:
    return any(w.partition("=")[0] == path for w in words)


def _relative(path: Path, cwd: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), cwd.resolve())
    except ValueError:
        return str(path.resolve())


def _attach(errors: dict[str, str], loc: str, message: str) -> None:
    """Put a validation problem under the field it is about (else under the overrides)."""
    for f in FIELDS:
        if f.path and (loc == f.path or (loc == "(spec)" and f.path in message)):
            errors.setdefault(f.key, message)
            return
    text = message if loc == "(spec)" else f"{loc}: {message}"
    errors[FREE] = f"{errors[FREE]}; {text}" if FREE in errors else text
