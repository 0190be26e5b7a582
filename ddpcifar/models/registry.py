"""The name -> model registry: `register` for the model modules, `build_model` for everyone else.

Apart from the package `__init__` so that a model module can import `register` without
importing the package that imports it (an import cycle).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from ddpcifar import catalog
from ddpcifar.errors import UserError

# A builder is a model class (or any callable) taking `num_classes` and returning a module.
ModelBuilder = Callable[..., nn.Module]
B = TypeVar("B", bound=ModelBuilder)

# Filled at import time by the `register` decorators of the modules that ddpcifar.models imports.
# Later additions only ever append (a test may register a tiny model); names are never replaced.
_BUILDERS: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[B], B]:
    """Class decorator that makes a model buildable as `build_model(name)`."""

    def decorator(builder: B) -> B:
        if name in _BUILDERS:
            raise ValueError(f"model name registered twice: {name}")
        _BUILDERS[name] = builder
        catalog.add(name, whitening_stem=bool(getattr(builder, "whitening_stem", None)))
        return builder

    return decorator


def model_names() -> tuple[str, ...]:
    """Every name `build_model` accepts right now: MODEL_NAMES plus any registered since."""
    return tuple(_BUILDERS)


def whitening_stem_models() -> tuple[str, ...]:
    """Names of the models with a whitening stem (`model.whitening` in a spec)."""
    return tuple(n for n, b in _BUILDERS.items() if getattr(b, "whitening_stem", None))


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a freshly initialised model by registry name.

    Raises UserError for an unknown name (listing the allowed ones) or a bad class count, so a
    typo in a spec or on the command line is one line on stderr rather than a KeyError traceback.
    """
    if name not in _BUILDERS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    # bool is an int subclass; reject it so `num_classes=True` is not silently a 1-class model.
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"num_classes must be an integer >= 2: {num_classes!r}")
    return _BUILDERS[name](num_classes=num_classes)
