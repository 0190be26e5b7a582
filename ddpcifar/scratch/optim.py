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
    """SGD with classical momentum: v <- beta*v - lr*g; w <- w + v.

    torch.optim.SGD keeps b <- beta*b + g and does w <- w - lr*b instead; the two agree
    (v = -lr*b) while lr is constant and differ when lr changes, because here a new lr only
    scales the new gradient while torch rescales the whole accumulated velocity.
    """

    def __init__(self, params: dict[str, np.ndarray], *, lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.velocity = {name: np.zeros_like(w) for name, w in params.items()}

    def update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        v = self.velocity[name]
        v *= self.momentum
        v -= self.lr * g
        w += v
