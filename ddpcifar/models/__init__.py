"""The model zoo: pure CIFAR-10 `nn.Module`s, looked up by name.

Every model takes a normalised float batch of shape (N, 3, 32, 32) and returns (N, num_classes).
Models know nothing about devices, DDP, AMP or `torch.compile`; the trainer's wrap step applies
those. Each class states in `outputs_log_probs` whether it returns log-probabilities or logits.

    from ddpcifar.models import MODEL_NAMES, build_model
    model = build_model("resnet9", num_classes=10)
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from ddpcifar.errors import UserError

__all__ = ["MODEL_NAMES", "build_model", "model_names", "register", "whitening_stem_models"]

# A builder is a model class (or any callable) taking `num_classes` and returning a module.
ModelBuilder = Callable[..., nn.Module]
B = TypeVar("B", bound=ModelBuilder)

# Filled at import time by the `register` decorators of the modules imported below. Later
# additions only ever append (a test may register a tiny model); names are never replaced.
_BUILDERS: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[B], B]:
    """Class decorator that makes a model buildable as `build_model(name)`."""

    def decorator(builder: B) -> B:
        if name in _BUILDERS:
            raise ValueError(f"model name registered twice: {name}")
        _BUILDERS[name] = builder
        return builder

    return decorator


# Importing the modules runs their `@register` decorators. The order here is the order of
# MODEL_NAMES (seed projects first, then the fast reference nets).
from ddpcifar.models import era_s9, net5fc, vgg8bn, resnet9, airbench  # noqa: E402,F401

# The built-in zoo, fixed at import. `model_names()` also includes models registered later.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


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

