"""Optimizers for the NumPy engine: a base class that owns L2 weight decay, and SGD+momentum.

The base class adds `weight_decay * w` to the gradient of every weight (names ending in
'weight'; biases are left alone) and hands the result to the subclass's `update`, so every
optimizer gets the same L2 penalty, 0.5 * weight_decay * ||w||^2 added to the loss.
"""

from __future__ import annotations

import numpy as np


def is_decayed(name: str) -> bool:
    """L2 applies to weights, never to biases: decided by the parameter's name."""
    return name.rsplit(".", 1)[-1] == "weight"


class Optimizer:
    """Updates a fixed dict of parameter arrays in place from a dict of gradients."""

    def __init__(self, params: dict[str, np.ndarray], *, lr: float, weight_decay: float = 0.0):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got {lr}, {weight_decay}")
        self.params = params
        self.lr = lr
        self.weight_decay = weight_decay

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update: L2 term first, then the subclass's rule, parameter by parameter."""
        for name, w in self.params.items():
            g = grads[name]
            if self.weight_decay and is_decayed(name):
                g = g + self.weight_decay * w
            self.update(name, w, g)

    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        """Change `w` in place given its (already L2-regularised) gradient `g`."""
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with momentum, the update torch.optim.SGD makes (dampening 0), so a spec's
    optimizer section means the same in both engines, also while the learning rate changes:

        b <- momentum * b + g;   w <- w - lr * b                      (classical)
                                 w <- w - lr * (g + momentum * b)     (nesterov)

    `g` already holds the L2 term (base class). With momentum 0 it is plain SGD.
    """

    def __init__(self, params: dict[str, np.ndarray], *, lr: float, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum = momentum
        self.nesterov = nesterov
        self.buffer = {name: np.zeros_like(w) for name, w in params.items()}

    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        if self.momentum == 0:
            w -= self.lr * g
            return
        b = self.buffer[name]
        b *= self.momentum
        b += g
        w -= self.lr * (g + self.momentum * b if self.nesterov else b)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most `max_norm`.

    torch.nn.utils.clip_grad_norm_'s rule (factor max_norm / (norm + 1e-6), never above 1),
    applied to the loss gradients before weight decay, as the torch engine does. Returns the
    norm before clipping.
    """
    norm = float(np.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values())))
    factor = max_norm / (norm + 1e-6)
    if factor < 1:
        for g in grads.values():
            g *= factor
    return norm
