"""The model zoo's names and traits without torch, so a run spec validates without importing it.

`ddpcifar.models` builds the networks (torch); this module only knows their names. The dashboard's
new-run form and `python -m ddpcifar.runs` validate specs with it, in processes that never load
torch. `ddpcifar.models.registry.register` adds any model registered later (a test's tiny net),
and a test checks that the built-in list below equals the registry's.
"""

from __future__ import annotations

# The built-in zoo in registry order: seed projects first, then the fast reference nets.
BUILTIN_MODELS: tuple[str, ...] = ("era_s9", "net5fc", "vgg8bn", "resnet9", "airbench")
# Models with a whitening stem that `model.whitening` may set from the data.
BUILTIN_WHITENING: tuple[str, ...] = ("airbench",)

_extra: dict[str, bool] = {}  # name -> has a whitening stem; filled by `add`


def add(name: str, *, whitening_stem: bool) -> None:
    """Make a model registered at run time known to spec validation."""
    if name not in BUILTIN_MODELS:
        _extra[name] = whitening_stem


def model_names() -> tuple[str, ...]:
    """Every torch model a spec may name right now."""
    return BUILTIN_MODELS + tuple(n for n in _extra if n not in BUILTIN_MODELS)


def whitening_stem_models() -> tuple[str, ...]:
    """Names of the models with a whitening stem."""
    return BUILTIN_WHITENING + tuple(n for n, stem in _extra.items() if stem)
