"""Choosing and ordering runs: the filters and sort keys of `runs ls` and the dashboard.

A query is words separated by spaces, every word must match:

    era_s9                 name or model contains it
    state:running          state is one of a comma-separated list (stored or derived)
    model:era_s9,net5fc    model is one of them
    tag:baseline           the run carries every such tag
    optimizer.lr>=0.01     a spec field compared with a number (= != < <= > >=) or, with = and
    augment.kind=basic     !=, with a string
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ddpcifar.errors import UserError
from ddpcifar.runs.reader import RunInfo

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, "=": operator.eq,
    ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^([A-Za-z_][\w.]*)(>=|<=|!=|=|>|<)(.*)$")

# Sort keys besides every number in RunInfo.metrics; None sorts last either way.
SORT_FIELDS: dict[str, Callable[[RunInfo], Any]] = {
    "name": lambda r: r.name,
    "model": lambda r: r.model,
    "state": lambda r: r.state,
    "epoch": lambda r: (r.epoch, r.epochs),
    "queue": lambda r: r.queue_position,
}
METRIC_KEYS = ("best_top1", "last_top1", "top1_tta", "val_top1", "images_per_s", "elapsed_s",
               "final_loss", "final_top1", "final_top5", "wall_time_s", "train_time_s",
               "time_to_accuracy_s")


@dataclass(frozen=True)
class Condition:
    path: str
    op: str
    value: Any

    def test(self, info: RunInfo) -> bool:
        actual = info.spec_value(self.path)
        if actual is None:
            return False
        if isinstance(self.value, float):
            if isinstance(actual, bool) or not isinstance(actual, (int, float)):
                return False
            return _OPS[self.op](float(actual), self.value)
        return _OPS[self.op](str(actual).lower(), self.value)


@dataclass(frozen=True)
class RunFilter:
    words: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = field(default_factory=tuple)

    def matches(self, info: RunInfo) -> bool:
        name, model = info.name.lower(), info.model.lower()
        return (all(w in name or w in model for w in self.words)
                and (not self.states or info.state in self.states)
                and (not self.models or info.model in self.models)
                and all(t in info.tags for t in self.tags)
                and all(c.test(info) for c in self.conditions))

    @property
    def empty(self) -> bool:
        return not (self.words or self.states or self.models or self.tags or self.conditions)


def condition(text: str) -> Condition:
    """`field<op>value` as a Condition; a one-line UserError when it is not one."""
    match = _CONDITION.match(text)
    if not match or not match.group(3):
        raise UserError(f"bad condition {text!r}: expected FIELD<op>VALUE, e.g. optimizer.lr>=0.01")
    path, op, raw = match.groups()
    try:
        value: Any = float(raw)
    except ValueError:
        if op not in ("=", "!="):
            raise UserError(f"bad condition {text!r}: {op} needs a number") from None
        value = raw.lower()
    return Condition(path, op, value)


def parse_query(text: str) -> RunFilter:
    """The dashboard's filter box: see the module docstring."""
    words, run_states, models, tags, conditions = [], [], [], [], []
    for token in text.split():
        key, sep, rest = token.partition(":")
        if sep and key in ("state", "model", "tag") and rest:
            target = {"state": run_states, "model": models, "tag": tags}[key]
            target.extend(v for v in rest.split(",") if v)
        elif _CONDITION.match(token):
            conditions.append(condition(token))
        else:
            words.append(token.lower())
    return RunFilter(tuple(words), tuple(run_states), tuple(models), tuple(tags), tuple(conditions))


def sort_key(key: str) -> Callable[[RunInfo], tuple]:
    """A key function for `sorted`: by `key`, missing values last, then by name."""
    if key in SORT_FIELDS:
        get = SORT_FIELDS[key]
    elif key in METRIC_KEYS:
        def get(r: RunInfo) -> Any:
            return r.metrics.get(key)
    else:
        allowed = ", ".join([*SORT_FIELDS, *METRIC_KEYS])
        raise UserError(f"unknown sort key {key!r} (allowed: {allowed})")

    def wrapped(r: RunInfo) -> tuple:
        value = get(r)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (missing, 0 if missing else value, r.name)

    return wrapped


def select(runs: Sequence[RunInfo], flt: RunFilter, sort: str = "name",
           reverse: bool = False) -> list[RunInfo]:
    """Filtered and sorted; with `reverse`, missing values still come last."""
    chosen = [r for r in runs if flt.matches(r)]
    key = sort_key(sort)
    present = sorted((r for r in chosen if not key(r)[0]), key=key, reverse=reverse)
    missing = sorted((r for r in chosen if key(r)[0]), key=lambda r: r.name)
    return present + missing
