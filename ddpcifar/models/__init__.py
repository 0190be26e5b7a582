"""The model zoo: pure CIFAR-10 `nn.Module`s, looked up by name.

Every model takes a normalised float batch of shape (N, 3, 32, 32) and returns (N, num_classes).
Models know nothing about devices, DDP, AMP or `torch.compile`; the trainer's wrap step applies
those. Each class states in `outputs_log_probs` whether it returns log-probabilities or logits.

    from ddpcifar.models import MODEL_NAMES, build_model
    model = build_model("resnet9", num_classes=10)
"""

from __future__ import annotations

# Importing the modules runs their `@register` decorators (ddpcifar.models.registry). The order
# here is the order of MODEL_NAMES (seed projects first, then the fast reference nets).
from ddpcifar.models import era_s9, net5fc, vgg8bn, resnet9, airbench  # noqa: F401
from ddpcifar.models.registry import build_model, model_names, register, whitening_stem_models

__all__ = ["MODEL_NAMES", "build_model", "model_names", "register", "whitening_stem_models"]

# The built-in zoo, fixed at import. `model_names()` also includes models registered later.
MODEL_NAMES: tuple[str, ...] = model_names()
